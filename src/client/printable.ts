/**
 * Text from the network shown on a terminal. A report's text, a file name
 * or a relay's error message may carry escape sequences (which can rewrite
 * the screen, retitle the window or fake earlier output) and bidi overrides
 * (which can make one address read as another), so human output passes
 * through here. `--json` output is left exact: JSON escapes controls itself.
 */

// C0 controls except \t and \n, DEL, C1 controls, bidi embeddings/overrides/isolates, line/paragraph separators.
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/gu

/** Replace every unsafe code point with U+FFFD; newlines and tabs are kept. */
export function printable(s: string): string {
  return s.replace(UNSAFE, '\ufffd')
}

/** As `printable`, on one line (newlines and tabs shown as spaces). */
export function printableLine(s: string): string {
  return printable(s).replace(/[\n\t]/g, ' ')
}

/** Enough of an address to tell senders apart at a glance (120 bits after the prefix). */
export function shortAddress(address: string): string {
  return address.length > 24 ? address.slice(0, 24) + '…' : address
}
