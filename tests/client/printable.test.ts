/** Hostile text from the network never reaches the terminal as control sequences. */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { openHome } from '../../src/client/client-home.js'
import { cmdInbox } from '../../src/client/commands.js'
import { initHome } from '../../src/client/identity.js'
import { printable, printableLine, shortAddress } from '../../src/client/printable.js'

describe('printable', () => {
  it('replaces escape sequences, C1 controls and bidi overrides, keeps text, newlines and tabs', () => {
    expect(printable('ok\x1b]0;pwned\x07 \x1b[2J\u009b31m')).toBe('ok\ufffd]0;pwned\ufffd \ufffd[2J\ufffd31m')
    expect(printable('a\u202eevil\u2066b')).toBe('a\ufffdevil\ufffdb')
    expect(printable('line one\nline two\ttab, سلام, 日本')).toBe('line one\nline two\ttab, سلام, 日本')
    expect(printableLine('a\nb\tc\rd')).toBe('a b c\ufffdd')
  })

  it('never lets a control character through, whatever the input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        const out = printableLine(s)
        expect(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/u.test(out)).toBe(false)
        expect([...out].length).toBe([...s].length) // one replacement per code point: nothing hidden, nothing merged
      }),
    )
  })

  it('shortens addresses to 24 characters', () => {
    expect(shortAddress('ch1.' + 'A'.repeat(90))).toBe('ch1.' + 'A'.repeat(20) + '…')
  })

  it('chapar inbox prints a hostile report without its escape sequences', async () => {
    const home = await mkdtemp(path.join(os.tmpdir(), 'chapar-printable-'))
    try {
      await initHome(home)
      const h = await openHome(home)
      await h.inbox.apply(
        await h.inbox.itemOps({ id: 'ab'.repeat(32), from: 'ch1.' + 'B'.repeat(90), created_at: 0, received_at: 0, priority: 1, bytes: 10, text: 'hi\x1b[2J\x1b]0;owned\x07\nbye' }),
      )
      await h.close()
      const lines: string[] = []
      expect(await cmdInbox({ home }, (l) => lines.push(l))).toBe(0)
      const all = lines.join('\n')
      expect(all).not.toMatch(/\x1b|\x07/)
      expect(all).toContain('hi\ufffd[2J\ufffd]0;owned\ufffd\n  bye')
      expect(all).toContain('from ch1.' + 'B'.repeat(20) + '…')
      // --json keeps the exact text (JSON escapes it).
      const json: string[] = []
      await cmdInbox({ home, json: true }, (l) => json.push(l))
      expect(JSON.parse(json.join('\n'))[0].text).toBe('hi\x1b[2J\x1b]0;owned\x07\nbye')
    } finally {
      await rm(home, { recursive: true, force: true })
    }
  })
})
