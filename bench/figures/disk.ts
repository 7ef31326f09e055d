import { rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { benchDataDir } from "../lib/assemble.js";
import { type Figure, figure, info, percentile, round } from "../lib/util.js";

/**
 * Context for every durable figure: what one SQLite commit costs on this disk right now (WAL,
 * synchronous=FULL, like the job store: one fsync of the WAL per commit), in the directory the bench
 * stores its jobs in. On a shared VM this moves with other tenants' I/O.
 */
export function diskFigures(commits = 200): Figure[] {
  const dir = benchDataDir("disk");
  try {
    const db = new Database(join(dir, "probe.sqlite"));
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
    const insert = db.prepare("INSERT INTO t (body) VALUES (?)");
    const body = "x".repeat(600);
    const ms: number[] = [];
    for (let i = 0; i < commits + 20; i++) {
      const t0 = performance.now();
      insert.run(body);
      if (i >= 20) ms.push(performance.now() - t0);
    }
    db.close();
    return [
      figure("sqlite_commit_fsync_ms_p50", percentile(ms, 50), "ms", info(), {
        p99: round(percentile(ms, 99)),
        commits,
        mode: "WAL, synchronous=FULL, one 600-byte row a commit",
      }),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
