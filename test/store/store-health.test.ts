import { describe, expect, it } from "vitest";
import { StoreHealth, StoreUnavailableError, storeFaultOf } from "../../agent/store/store-health.js";
import { ManualClock } from "../../agent/util/clock.js";

const coded = (code: string) => Object.assign(new Error(code), { code });

describe("store faults", () => {
  it("classifies SQLite's extended codes and the OS's errnos", () => {
    expect(storeFaultOf(coded("SQLITE_FULL"))).toBe("STORE_FULL");
    expect(storeFaultOf(coded("ENOSPC"))).toBe("STORE_FULL");
    expect(storeFaultOf(coded("SQLITE_CORRUPT_INDEX"))).toBe("STORE_CORRUPT");
    expect(storeFaultOf(coded("SQLITE_NOTADB"))).toBe("STORE_CORRUPT");
    expect(storeFaultOf(coded("SQLITE_READONLY_DBMOVED"))).toBe("STORE_READONLY");
    expect(storeFaultOf(coded("EROFS"))).toBe("STORE_READONLY");
    expect(storeFaultOf(coded("SQLITE_IOERR_WRITE"))).toBe("STORE_IO_ERROR");
    expect(storeFaultOf(coded("SQLITE_BUSY"))).toBeUndefined();
    expect(storeFaultOf(new Error("plain"))).toBeUndefined();
    expect(storeFaultOf(new StoreUnavailableError("STORE_FULL", "x"))).toBe("STORE_FULL");
  });

  it("an I/O error on a file system with no free space is a full disk", () => {
    const health = new StoreHealth({
      clock: new ManualClock(0),
      dataDir: ".",
      minFreeBytes: 0,
      probe: () => undefined,
      freeBytes: () => 0,
    });
    expect(health.report(coded("SQLITE_IOERR_WRITE"))).toBe("STORE_FULL");
  });

  it("probes with a doubling delay until a write succeeds, then wakes whoever waits", async () => {
    const clock = new ManualClock(0);
    let writable = false;
    let probes = 0;
    const health = new StoreHealth({
      clock,
      dataDir: ".",
      minFreeBytes: 100,
      freeBytes: () => 1_000,
      probe: () => {
        probes++;
        if (!writable) throw coded("SQLITE_FULL");
      },
    });
    expect(health.report(coded("SQLITE_FULL"))).toBe("STORE_FULL");
    expect(health.refusesPushes()).toBe("STORE_FULL");
    let woke = false;
    const waiting = health.writable().then(() => {
      woke = true;
    });
    clock.advance(1_000);
    clock.advance(2_000);
    expect(probes).toBe(2);
    writable = true;
    clock.advance(4_000);
    await waiting;
    expect(woke).toBe(true);
    expect(health.fault).toBeUndefined();
    expect(health.faultCounts().get("STORE_FULL")).toBe(1);
    expect(health.refusesPushes()).toBeUndefined();
  });

  it("refuses pushes below the watermark with no fault in force", () => {
    const health = new StoreHealth({
      clock: new ManualClock(0),
      dataDir: ".",
      minFreeBytes: 100,
      freeBytes: () => 99,
      probe: () => undefined,
    });
    expect(health.fault).toBeUndefined();
    expect(health.refusesPushes()).toBe("STORE_FULL");
  });

  it("a wait ends with the agent's stop", async () => {
    const health = new StoreHealth({
      clock: new ManualClock(0),
      dataDir: ".",
      minFreeBytes: 0,
      probe: () => undefined,
    });
    health.report(coded("SQLITE_CORRUPT"));
    const stop = new AbortController();
    const waiting = health.writable(stop.signal);
    stop.abort();
    await expect(waiting).rejects.toMatchObject({ code: "STORE_CORRUPT" });
  });
});
