// Types for store-schema.mjs (plain JavaScript: the package runs it under node, in maintainer scripts
// too), for the tests.
export declare const DEFAULT_DATA_DIR: string;
export declare const EXIT_NEWER: number;
export declare const EXIT_UNKNOWN: number;
export declare function dataDirFromConfig(file: string | undefined, env?: NodeJS.ProcessEnv): string | undefined;
export declare function readStoreSchema(dataDir: string): { file: string; version: number | undefined };
export declare function newerMessage(file: string, version: number, schema: number, packageVersion: string): string;
export declare function newerStoreRefusal(
  runArgs: string[],
  info: { schemaVersion: number; version: string },
): string | undefined;
