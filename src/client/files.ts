import { mkdir, open } from 'node:fs/promises'
import path from 'node:path'

/** Where received attachments go. The engine calls it; the driver decides where that is. */
export interface FileSink {
  /** Save durably and return the path (or a name, for in-memory sinks). */
  save(id: string, name: string, data: Uint8Array): Promise<string>
}

/** A file name from a stranger, made safe: no directories, no control or bidi characters (no "gpj.exe" shown as "exe.jpg"), no dot-files. */
export function safeFileName(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? ''
  const clean = base.replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g, '').replace(/^\.+/, '').trim().slice(0, 200)
  return clean.length > 0 ? clean : 'attachment'
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

export class DiskFileSink implements FileSink {
  constructor(private readonly dir: string) {}

  async save(id: string, name: string, data: Uint8Array): Promise<string> {
    const folder = path.join(this.dir, id.slice(0, 16))
    await mkdir(folder, { recursive: true, mode: 0o700 })
    const file = path.join(folder, safeFileName(name))
    const fh = await open(file, 'w', 0o600)
    try {
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
    // The file's directory entries must be durable too before the inbox names it.
    await syncDir(folder)
    await syncDir(this.dir)
    return file
  }
}

export class MemoryFileSink implements FileSink {
  readonly files = new Map<string, Uint8Array>()

  async save(id: string, name: string, data: Uint8Array): Promise<string> {
    const key = `${id.slice(0, 16)}/${safeFileName(name)}`
    this.files.set(key, data)
    return key
  }
}
