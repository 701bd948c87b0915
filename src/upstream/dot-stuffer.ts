// Dot-stuffing for DATA sent upstream (RFC 5321 4.5.2). smtp-server hands us the message with the
// client's stuffing removed (a dot after any LF), so we add it back by the same rule: a "." that
// starts a line, or the message, is doubled. Postfix removes exactly those dots again, which keeps
// the body byte-exact end to end.

const DOT = 0x2e;
const LF = 0x0a;
const CR = 0x0d;

export class DotStuffer {
  private atLineStart = true;
  private lastTwo: [number, number] = [CR, LF];
  private bytesSeen = 0;

  /** The stuffed form of the next chunk of the message. */
  push(chunk: Buffer): Buffer {
    if (chunk.length === 0) return chunk;
    const insertAt: number[] = [];
    if (this.atLineStart && chunk[0] === DOT) insertAt.push(0);
    let index = chunk.indexOf(LF);
    while (index !== -1 && index + 1 < chunk.length) {
      if (chunk[index + 1] === DOT) insertAt.push(index + 1);
      index = chunk.indexOf(LF, index + 1);
    }
    this.atLineStart = chunk[chunk.length - 1] === LF;
    this.lastTwo = chunk.length >= 2
      ? [chunk[chunk.length - 2] as number, chunk[chunk.length - 1] as number]
      : [this.lastTwo[1], chunk[0] as number];
    this.bytesSeen += chunk.length;
    if (insertAt.length === 0) return chunk;

    const out = Buffer.allocUnsafe(chunk.length + insertAt.length);
    let from = 0;
    let written = 0;
    for (const position of insertAt) {
      written += chunk.copy(out, written, from, position);
      out[written] = DOT;
      written += 1;
      from = position;
    }
    chunk.copy(out, written, from);
    return out;
  }

  /** The end-of-data sequence: a CRLF first if the message did not end with one. */
  terminator(): Buffer {
    const endsWithCrlf = this.bytesSeen === 0 || (this.lastTwo[0] === CR && this.lastTwo[1] === LF);
    return Buffer.from(endsWithCrlf ? '.\r\n' : '\r\n.\r\n', 'latin1');
  }
}
