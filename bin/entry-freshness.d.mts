// Types for entry-freshness.mjs (plain JavaScript, so bin/ runs before any loader), for the tests.
export declare const BUNDLE: string;
export declare const SOURCE_DIRS: readonly string[];
export declare const SOURCE_FILES: readonly string[];
export type BundleFreshness =
  | { state: "fresh"; bundle: string }
  | { state: "missing"; bundle: string; reason: string }
  | { state: "stale"; bundle: string; newer: string; reason: string };
export declare function bundleFreshness(root: string): BundleFreshness;
