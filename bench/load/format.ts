/**
 * Number formats shared by the progress lines and the report.
 *
 * @module
 */

/**
 * An integer with thousands separators (rounded): `1,467,388`.
 *
 * @example
 * ```ts
 * fmtInt(1467388.4); // "1,467,388"
 * ```
 */
export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/**
 * Bytes in MiB with one decimal, or `n/a` when unknown.
 *
 * @example
 * ```ts
 * fmtMiB(108_843_008); // "103.8 MiB"
 * fmtMiB(null); // "n/a"
 * ```
 */
export function fmtMiB(bytes: number | null): string {
  return bytes === null ? "n/a" : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
