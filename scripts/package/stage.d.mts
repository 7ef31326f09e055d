// Types for stage.mjs (plain JavaScript: it runs before anything is installed), for the tests.
export declare const BUILD_ONLY: ReadonlySet<string>;
export declare const ARCHES: Record<string, { node: string; machine: number }>;
export declare function runtimeClosure(src: string, externals: string[]): string[];
export declare function inlinedPackages(bundleText: string): string[];
