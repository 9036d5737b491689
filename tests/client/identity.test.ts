import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { initHome, loadIdentity, resolveHome } from '../../src/client/identity.js'
import { parseAddress } from '../../src/protocol/address.js'
import { ChaparError } from '../../src/protocol/errors.js'

const dirs: string[] = []
async function tmp() {
  const d = await mkdtemp(path.join(tmpdir(), 'chapar-id-'))
  dirs.push(d)
  return d
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

describe('identity', () => {
  it('creates a 0700 home with a 0600 identity that loads back to the same address', async () => {
    const home = path.join(await tmp(), 'alice')
    const id = await initHome(home)
    expect((await stat(home)).mode & 0o777).toBe(0o700)
    expect((await stat(path.join(home, 'identity.json'))).mode & 0o777).toBe(0o600)
    const again = await loadIdentity(home)
    expect(again.addressText).toBe(id.addressText)
    expect(parseAddress(id.addressText).signPublicKey).toEqual(id.address.signPublicKey)
  })

  it('refuses to overwrite an identity', async () => {
    const home = await tmp()
    await initHome(home)
    const before = await readFile(path.join(home, 'identity.json'), 'utf8')
    await expect(initHome(home)).rejects.toThrow(/already holds an identity/)
    expect(await readFile(path.join(home, 'identity.json'), 'utf8')).toBe(before)
  })

  it('reports a missing home, a file as home, and a tampered identity clearly', async () => {
    const d = await tmp()
    await expect(loadIdentity(path.join(d, 'none'))).rejects.toThrow(/no chapar home/)
    await writeFile(path.join(d, 'f'), 'x')
    await expect(loadIdentity(path.join(d, 'f'))).rejects.toThrow(/not a directory/)
    const home = path.join(d, 'h')
    await initHome(home)
    const file = JSON.parse(await readFile(path.join(home, 'identity.json'), 'utf8'))
    const other = path.join(d, 'other')
    file.address = (await initHome(other)).addressText
    await writeFile(path.join(home, 'identity.json'), JSON.stringify(file))
    const err = await loadIdentity(home).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ChaparError)
    expect((err as Error).message).toMatch(/keys do not match the recorded address/)
  })

  it('resolves --home, then $CHAPAR_HOME, then ~/.chapar', () => {
    const saved = process.env.CHAPAR_HOME
    try {
      process.env.CHAPAR_HOME = '/x/env'
      expect(resolveHome('/x/opt')).toBe('/x/opt')
      expect(resolveHome()).toBe('/x/env')
      delete process.env.CHAPAR_HOME
      expect(resolveHome()).toMatch(/\.chapar$/)
    } finally {
      if (saved === undefined) delete process.env.CHAPAR_HOME
      else process.env.CHAPAR_HOME = saved
    }
  })
})
