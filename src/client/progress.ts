/** A live status line on stderr: redrawn in place on a terminal, printed sparingly otherwise. */
export class LiveLine {
  private last = ''
  private lastPrintAt = 0
  private readonly tty: boolean

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly minIntervalMs = 2000,
  ) {
    this.tty = Boolean(stream.isTTY)
  }

  update(text: string, force = false): void {
    if (text === this.last) return
    const now = Date.now()
    if (this.tty) {
      const width = this.stream.columns ?? 100
      this.stream.write('\r\x1b[2K' + text.slice(0, width - 1))
      this.last = text
    } else if (force || now - this.lastPrintAt >= this.minIntervalMs) {
      this.stream.write(text + '\n')
      this.lastPrintAt = now
      this.last = text
    }
  }

  /** End the live line so that what follows starts on a fresh line. */
  done(): void {
    if (this.tty && this.last) this.stream.write('\n')
    this.last = ''
  }
}
