/**
 * Identity and keystore: an Ed25519 signing key and an X25519 box key,
 * kept in `<home>/identity.json` with mode 0600 in a 0700 home.
 */
import { constants } from 'node:fs'
import { access, chmod, mkdir, open, readFile, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import path from 'node:path'
import nacl from 'tweetnacl'
import { type Address, formatAddress } from '../protocol/address.js'
import { fromBase64url, toBase64url } from '../protocol/bytes.js'
import { ChaparError, ErrorCode, InputError } from '../protocol/errors.js'
import { boxPublicKey } from '../protocol/box.js'
import { mailboxId } from '../protocol/hash.js'
import { signKeyPairFromSeed } from '../protocol/signature.js'

export interface Identity {
  readonly address: Address
  readonly addressText: string
  readonly signSecretKey: Uint8Array
  readonly boxSecretKey: Uint8Array
  readonly mailbox: Uint8Array
}

interface IdentityFile {
  version: 1
  address: string
  sign_secret_key: string
  box_secret_key: string
  created_at: number
}

export const IDENTITY_FILE = 'identity.json'

/** `--home`, else $CHAPAR_HOME, else ~/.chapar. */
export function resolveHome(option?: string): string {
  return path.resolve(option ?? process.env.CHAPAR_HOME ?? path.join(homedir(), '.chapar'))
}

export function identityFromKeys(signSecretKey: Uint8Array, boxSecretKey: Uint8Array): Identity {
  const sign = nacl.sign.keyPair.fromSecretKey(signSecretKey)
  const address: Address = { signPublicKey: sign.publicKey, boxPublicKey: boxPublicKey(boxSecretKey) }
  return { address, addressText: formatAddress(address), signSecretKey, boxSecretKey, mailbox: mailboxId(sign.publicKey) }
}

export function generateIdentity(randomBytes: (n: number) => Uint8Array = nacl.randomBytes): Identity {
  const sign = signKeyPairFromSeed(randomBytes(32))
  return identityFromKeys(sign.secretKey, randomBytes(32))
}

/** Create a new identity in `home`; refuses to overwrite one. */
export async function initHome(home: string): Promise<Identity> {
  try {
    await mkdir(home, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new InputError(`cannot create home ${home}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
  const id = generateIdentity()
  const file: IdentityFile = {
    version: 1,
    address: id.addressText,
    sign_secret_key: toBase64url(id.signSecretKey),
    box_secret_key: toBase64url(id.boxSecretKey),
    created_at: Date.now(),
  }
  let fh
  try {
    fh = await open(path.join(home, IDENTITY_FILE), 'wx', 0o600)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new InputError(`${home} already holds an identity; refusing to overwrite it`)
    throw new InputError(`cannot write identity in ${home}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
  try {
    await fh.writeFile(JSON.stringify(file, null, 2) + '\n')
    await fh.sync()
  } finally {
    await fh.close()
  }
  await chmod(home, 0o700)
  return id
}

export async function loadIdentity(home: string): Promise<Identity> {
  const file = path.join(home, IDENTITY_FILE)
  try {
    const st = await stat(home)
    if (!st.isDirectory()) throw new InputError(`home ${home} is not a directory`)
    await access(home, constants.R_OK | constants.W_OK | constants.X_OK)
  } catch (err) {
    if (err instanceof InputError) throw err
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new InputError(`no chapar home at ${home}; run "chapar init --home ${home}" first`)
    throw new InputError(`cannot use home ${home}: ${code ?? (err as Error).message}`)
  }
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new InputError(`no identity in ${home}; run "chapar init --home ${home}" first`)
    throw new InputError(`cannot read ${file}: ${code ?? (err as Error).message}`)
  }
  try {
    const f = JSON.parse(text) as IdentityFile
    if (f.version !== 1) throw new Error(`unsupported version ${String(f.version)}`)
    const sk = fromBase64url(f.sign_secret_key)
    const bk = fromBase64url(f.box_secret_key)
    if (sk.length !== 64 || bk.length !== 32) throw new Error('wrong key lengths')
    const id = identityFromKeys(sk, bk)
    if (id.addressText !== f.address) throw new Error('keys do not match the recorded address')
    return id
  } catch (err) {
    throw new ChaparError(ErrorCode.BAD_INPUT, `corrupt identity file ${file}: ${(err as Error).message}`, { cause: err })
  }
}
