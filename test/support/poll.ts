/**
 * Resolves once `predicate` holds, re-checking every `everyMs`: for conditions on the agent's side
 * (or another process's), which raise no event a test could await. Fails after `timeoutMs` naming
 * `what`. test/support/e2e.ts and test/log/support.ts each expose it as their `until`.
 */
export async function pollUntil(
  predicate: () => boolean,
  options: { timeoutMs: number; what: string; everyMs: number },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${options.what} not met within ${options.timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, options.everyMs));
  }
}
