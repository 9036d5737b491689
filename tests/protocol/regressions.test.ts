// Regressions: each of these failed before the fix it names (found by the protocol test sweep).
import { describe, expect, it } from 'vitest'
import { Reader, Writer, fromBase64url } from '../../src/protocol/bytes.js'
import { ChaparError, ErrorCode, ProtocolError } from '../../src/protocol/errors.js'
import { parseAddress } from '../../src/protocol/address.js'
import { Kind, open, seal, decodeHeader } from '../../src/protocol/envelope.js'
import { FrameType, decodeFrame, encodeFrame } from '../../src/protocol/frames.js'
import { generateIdentity } from '../../src/client/identity.js'

const alice = generateIdentity()
const bob = generateIdentity()
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

describe('protocol regressions', () => {
  it('B1 open/decodeHeader: expiry high bytes flipped -> ChaparError, not RangeError', () => {
    const env = seal({ from: alice, to: bob.address, content: { kind: Kind.report, text: 'x' }, createdAt: 1, expiresAt: 1_800_000_000_000 })
    env[36] = env[36]! ^ 0x01
    expect(() => decodeHeader(env)).toThrow(ChaparError)
    expect(() => open(env, bob)).toThrow(ChaparError)
  })
  it('B10 a creation time no Date can hold is refused (it made `chapar inbox` throw on every run)', () => {
    const env = seal({ from: alice, to: bob.address, content: { kind: Kind.report, text: 'x' }, createdAt: 2 ** 53 - 1, expiresAt: 1_800_000_000_000 })
    expect(() => open(env, bob)).toThrow(expect.objectContaining({ code: ErrorCode.BAD_ENVELOPE }))
    const ok = seal({ from: alice, to: bob.address, content: { kind: Kind.report, text: 'x' }, createdAt: 8.64e15, expiresAt: 1_800_000_000_000 })
    expect(new Date(open(ok, bob).createdAt).toISOString()).toBe('+275760-09-13T00:00:00.000Z')
  })
  it('B2 leading BOM survives Reader.str and envelope text', () => {
    expect(new Reader(new Writer().str('\uFEFFa').finish()).str()).toBe('\uFEFFa')
    const env = seal({ from: alice, to: bob.address, content: { kind: Kind.report, text: '\uFEFFhi' }, createdAt: 1, expiresAt: 2 })
    expect(open(env, bob).content).toEqual({ kind: Kind.report, text: '\uFEFFhi' })
  })
  it('B3 every single-character change to an address is rejected (last char too)', () => {
    const t = alice.addressText
    for (const c of B64) if (c !== t.at(-1)) expect(() => parseAddress(t.slice(0, -1) + c)).toThrow(ChaparError)
    expect(() => fromBase64url('A')).toThrow(TypeError)
  })
  it('B4 a file name the recipient would refuse is refused at seal time', () => {
    let err: unknown
    try { seal({ from: alice, to: bob.address, content: { kind: Kind.report, file: { name: 'n'.repeat(1025), data: new Uint8Array(1) } }, createdAt: 1, expiresAt: 2 }) } catch (e) { err = e }
    expect((err as ChaparError).code).toBe(ErrorCode.TOO_LARGE)
  })
  it('B5 ERROR frames with long non-ASCII messages decode', () => {
    const f = decodeFrame(encodeFrame({ type: FrameType.ERROR, code: ErrorCode.INTERNAL, id: undefined, message: 'خطا '.repeat(200) }))
    expect(f.type === FrameType.ERROR && new TextEncoder().encode(f.message).length).toBeLessThanOrEqual(500)
  })
  it('B6 Writer(0) does not hang', () => {
    expect([...new Writer(0).u8(1).finish()]).toEqual([1])
  })
  it('B7 Writer rejects values that do not fit', () => {
    expect(() => new Writer().u8(256)).toThrow(RangeError)
    expect(() => new Writer().u16(70000)).toThrow(RangeError)
    expect(() => new Writer().u32(-1)).toThrow(RangeError)
    expect(() => encodeFrame({ type: FrameType.LIST, max: 70000 })).toThrow(RangeError)
  })
  it('B8 receipt ids of the wrong length are refused at seal time', () => {
    expect(() => seal({ from: alice, to: bob.address, content: { kind: Kind.receipt, ids: [new Uint8Array(31)] }, createdAt: 1, expiresAt: 2 })).toThrow(ChaparError)
  })
  it('B9 INDEX more flag other than 0/1 is BAD_FRAME', () => {
    expect(() => decodeFrame(Uint8Array.of(0x21, 2, 0, 0))).toThrow(ProtocolError)
  })
})
