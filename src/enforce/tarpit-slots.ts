// The cap on sessions tarpitted at once (OpenBSD spamd's -B): a tarpit holds a connection open on
// purpose, so without a cap a large enough flood would fill every slot with tarpitted sessions.
export class TarpitSlots {
  private held = 0;

  constructor(private readonly capacity: () => number) {}

  get active(): number {
    return this.held;
  }

  tryEnter(): boolean {
    if (this.held >= this.capacity()) return false;
    this.held += 1;
    return true;
  }

  leave(): void {
    this.held = Math.max(0, this.held - 1);
  }
}
