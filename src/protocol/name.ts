/**
 * The rule for message names: 1 to 255 bytes of UTF-8 with no whitespace and no control
 * characters, so that a name is always exactly one field of a line in the file.
 *
 * @module
 */

const strict = new TextDecoder("utf-8", { fatal: true });
// Whitespace (Unicode White_Space) and control characters (Cc), beyond ASCII.
const FORBIDDEN = /[\s\p{Cc}]/u;

/**
 * Checks the name in `bytes[start, end)`; returns an empty string if it is valid, else why not.
 * Plain printable ASCII, the usual case, is checked without allocating.
 *
 * @example
 * ```ts
 * const b = new TextEncoder().encode("client_1");
 * nameProblem(b, 0, b.length); // ""
 * ```
 */
export function nameProblem(bytes: Uint8Array, start: number, end: number): string {
  if (end <= start) return "name is empty";
  if (end - start > 255) return "name is over 255 bytes";
  let ascii = true;
  for (let i = start; i < end; i++) {
    const c = bytes[i]!;
    if (c <= 0x20 || c === 0x7f) return "name has whitespace or a control character";
    if (c >= 0x80) ascii = false;
  }
  if (ascii) return "";
  let text: string;
  try {
    text = strict.decode(bytes.subarray(start, end));
  } catch {
    return "name is not valid UTF-8";
  }
  return FORBIDDEN.test(text) ? "name has whitespace or a control character" : "";
}
