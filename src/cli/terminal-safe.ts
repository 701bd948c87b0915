// What the CLI's human-readable output may send to an operator's terminal. Quarantined headers, sender
// addresses, HELO names, CSV fields and the proxy's error strings come from the network: an escape
// sequence in them could move the cursor and rewrite lines above (a verdict), set the window title,
// plant OSC 8 links or write the clipboard (OSC 52), and a bidi control reverses the text after it.
// Such characters are shown as visible escapes instead (\x1b, \u202e); tab and newline stay as they are.

/** C0 but tab and newline, DEL, C1, and the bidi embeddings, overrides and isolates (U+202A–202E, U+2066–2069). */
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;

export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, (char) => {
    const code = char.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
