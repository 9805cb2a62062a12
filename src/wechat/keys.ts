import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import type { VerificationKeys } from './verifier.js'

/** A problem with key material, phrased for the person configuring the gateway. Never contains key bytes. */
export class KeyError extends Error {
  constructor (readonly problems: string[]) {
    super(problems.join('\n'))
    this.name = 'KeyError'
  }
}

/** A secret file that group or others may read: worth a warning (it is not refused: the mount decides). */
export function exposedFile (path: string, setting: string): string | undefined {
  try {
    const mode = statSync(path).mode & 0o777
    if ((mode & 0o077) === 0) return undefined
    return `${setting}: ${path} can be read by other users (mode ${mode.toString(8).padStart(4, '0')}); chmod 600 it, or mount the secret with mode 0400`
  } catch {
    return undefined // unreadable files are reported by the loader
  }
}

function read (path: string, setting: string, problems: string[]): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    problems.push(`${setting}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    return undefined
  }
}

/** An APIv3 key read from its file: exactly 32 bytes once a trailing newline is dropped. */
export function readApiv3Key (path: string, setting: string, problems: string[]): string | undefined {
  const key = read(path, setting, problems)?.replace(/\r?\n$/, '')
  if (key === undefined) return undefined
  if (Buffer.byteLength(key) !== 32) {
    problems.push(`${setting}: must hold exactly 32 bytes (the APIv3 key set in the merchant platform), not ${Buffer.byteLength(key)}`)
    return undefined
  }
  return key
}

/** The merchant API private key: PKCS#1 or PKCS#8 PEM, RSA of at least 2048 bits. */
export function loadPrivateKey (path: string, setting: string, problems: string[]): KeyObject | undefined {
  const pem = read(path, setting, problems)
  if (pem === undefined) return undefined
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch {
    problems.push(`${setting}: ${path} is not a PEM private key (PKCS#1 or PKCS#8, like the apiclient_key.pem of the merchant platform)`)
    return undefined
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
  if (key.asymmetricKeyType !== 'rsa' || bits < 2048) {
    problems.push(`${setting}: ${path} must be an RSA key of at least 2048 bits (found ${key.asymmetricKeyType ?? 'unknown'} ${bits} bits)`)
    return undefined
  }
  return key
}

/** A WeChat Pay public key (SPKI PEM) or a certificate PEM, whose public key is taken. */
export function loadPublicKey (path: string, setting: string, problems: string[]): KeyObject | undefined {
  const pem = read(path, setting, problems)
  if (pem === undefined) return undefined
  try {
    const key = createPublicKey(pem)
    if (key.asymmetricKeyType === 'rsa') return key
    problems.push(`${setting}: ${path} must hold an RSA public key`)
  } catch {
    problems.push(`${setting}: ${path} is not a PEM public key (SPKI, like the WeChat Pay public key file)`)
  }
  return undefined
}

/** Where each key setting of a merchant was given, for messages: an environment variable or a field of the merchants file. */
export interface KeyLabels {
  privateKeyFile: string
  merchantCertFile: string
  merchantSerial: string
  publicKeyFile: string
  apiv3Key: string
}

/** Checks a merchant certificate (apiclient_cert.pem) against the configured serial and private key. */
export function checkMerchantCertificate (path: string, serial: string, privateKey: KeyObject | undefined,
  problems: string[], labels: KeyLabels): void {
  const pem = read(path, labels.merchantCertFile, problems)
  if (pem === undefined) return
  let cert: X509Certificate
  try {
    cert = new X509Certificate(pem)
  } catch {
    problems.push(`${labels.merchantCertFile}: ${path} is not a PEM certificate`)
    return
  }
  if (cert.serialNumber.toUpperCase() !== serial.toUpperCase()) {
    problems.push(`${labels.merchantSerial} is ${serial} but the merchant certificate's serial is ${cert.serialNumber.toUpperCase()}`)
  }
  if (privateKey !== undefined && !cert.checkPrivateKey(privateKey)) {
    problems.push(`${labels.privateKeyFile} does not belong to the merchant certificate in ${labels.merchantCertFile}`)
  }
}

export function sameKey (a: KeyObject, b: KeyObject): boolean {
  return a.export({ type: 'spki', format: 'der' }).equals(b.export({ type: 'spki', format: 'der' }))
}

export interface CertificateEntry {
  key: KeyObject
  /** Milliseconds since the epoch after which the certificate no longer verifies anything. */
  expiresAt: number
}

/**
 * The verification keys of one merchant: the WeChat Pay public key (by its PUB_KEY_ID) and platform certificates
 * (by serial). Certificates past their expiry are ignored. The merchant's own serial is never a verification key.
 */
export class KeyRing implements VerificationKeys {
  private publicKeys = new Map<string, KeyObject>()
  private certificates = new Map<string, CertificateEntry>()
  refresh?: (serial: string) => Promise<boolean>

  /** `merchantSerial` is read at each check, so that it follows a rotated merchant certificate. */
  constructor (private readonly merchantSerial: string | (() => string), private readonly now: () => number = Date.now) {}

  setPublicKey (id: string, key: KeyObject): void {
    this.publicKeys = new Map([[id, key]])
  }

  /** Replaces the platform certificates at once (a download returns the whole current set). */
  setCertificates (entries: Map<string, CertificateEntry>): void {
    const merchant = (typeof this.merchantSerial === 'function' ? this.merchantSerial() : this.merchantSerial).toUpperCase()
    for (const serial of entries.keys()) {
      if (serial.toUpperCase() === merchant) {
        throw new KeyError([`the merchant serial ${serial} cannot be a verification key`])
      }
    }
    this.certificates = entries
  }

  get (serial: string): KeyObject | undefined {
    const pub = this.publicKeys.get(serial)
    if (pub !== undefined) return pub
    const cert = this.certificates.get(serial.toUpperCase())
    return cert !== undefined && cert.expiresAt > this.now() ? cert.key : undefined
  }

  serials (): string[] {
    const now = this.now()
    return [...this.publicKeys.keys(), ...[...this.certificates].filter(([, c]) => c.expiresAt > now).map(([s]) => s)]
  }

  /** Seconds until the nearest unexpired platform certificate expires (undefined when there is none). */
  nearestCertificateExpiry (): number | undefined {
    const now = this.now()
    const left = [...this.certificates.values()].map(c => c.expiresAt - now).filter(ms => ms > 0)
    return left.length === 0 ? undefined : Math.min(...left) / 1000
  }

  /** True when no key can verify anything now. */
  isEmpty (): boolean {
    return this.publicKeys.size === 0 && this.nearestCertificateExpiry() === undefined
  }

  hasCertificates (): boolean {
    return this.serials().some(s => !this.publicKeys.has(s))
  }
}
