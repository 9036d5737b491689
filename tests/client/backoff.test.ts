import { describe, expect, it } from 'vitest'
import { BACKOFF_BASE_MS, BACKOFF_CAP_MS, fullJitterDelay } from '../../src/client/backoff.js'
import { safeFileName } from '../../src/client/files.js'

describe('full-jitter backoff', () => {
  it('draws uniformly below a doubling ceiling, capped, never giving up', () => {
    expect(fullJitterDelay(0, () => 0.999999)).toBe(BACKOFF_BASE_MS - 1)
    expect(fullJitterDelay(3, () => 0.5)).toBe(BACKOFF_BASE_MS * 4)
    expect(fullJitterDelay(0, () => 0)).toBe(0)
    expect(fullJitterDelay(50, () => 0.999999)).toBe(BACKOFF_CAP_MS - 1)
    expect(fullJitterDelay(10_000, () => 0.5)).toBe(BACKOFF_CAP_MS / 2)
  })
})

describe('safeFileName', () => {
  it('keeps a plain name and strips directories, control characters and leading dots', () => {
    expect(safeFileName('evidence.jpg')).toBe('evidence.jpg')
    expect(safeFileName('../../etc/passwd')).toBe('passwd')
    expect(safeFileName('C:\\Users\\x\\clip.mp4')).toBe('clip.mp4')
    expect(safeFileName('.bashrc')).toBe('bashrc')
    expect(safeFileName('a\u0000b\nc')).toBe('abc')
    expect(safeFileName('report\u202Egpj.exe')).toBe('reportgpj.exe') // no right-to-left override disguising the extension
    expect(safeFileName('x\u009b31my')).toBe('x31my')
    expect(safeFileName('..')).toBe('attachment')
    expect(safeFileName('')).toBe('attachment')
  })
})
