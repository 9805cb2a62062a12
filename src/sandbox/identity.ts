import { createPrivateKey, createPublicKey, generateKeyPair, randomBytes, randomInt, X509Certificate, type KeyObject as Key } from 'node:crypto'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { selfSignedCertificate } from './certificate.js'

/**
 * The sandbox's keys and ids, created on first start in SANDBOX_DIR and reused after. `sandbox.json` describes
 * the merchant side (what any client needs: ours or an official SDK); the simulator's own private keys sit beside
 * it under fixed names and are never listed there.
 */

export interface SandboxJson {
  mchid: string
  appid: string
  merchant_serial: string
  merchant_private_key_file: string
  merchant_cert_file: string
  wechatpay_public_key_id: string
  wechatpay_public_key_file: string
  platform_cert_serial: string
  platform_cert_file: string
  apiv3_key: string
}

export interface SandboxIdentity {
  dir: string
  json: SandboxJson
  /** Absolute path of a file named in sandbox.json. */
  path: (file: string) => string
  merchantPublicKey: Key
  /** The simulator's keys: the WeChat Pay public-key pair and the platform certificate's pair. */
  publicKeySigner: Key
  platformSigner: Key
  platformCertPem: string
  platformCertExpiry: Date
}

export interface IdentityOverrides {
  mchid?: string | undefined
  appid?: string | undefined
  merchantSerial?: string | undefined
  publicKeyId?: string | undefined
}

const FILES = {
  json: 'sandbox.json',
  merchantKey: 'apiclient_key.pem',
  merchantCert: 'apiclient_cert.pem',
  publicKey: 'wechatpay_public_key.pem',
  publicKeyPrivate: 'simulator_public_key_private.pem',
  platformCert: 'wechatpay_platform_cert.pem',
  platformKey: 'simulator_platform_private.pem'
} as const

/** A certificate serial as WeChat Pay writes them: 40 upper-case hex digits, not starting with 0. */
export function randomSerial (): string {
  return (randomInt(1, 16).toString(16) + randomBytes(20).toString('hex').slice(1)).toUpperCase()
}

const digits = (n: number): string => Array.from({ length: n }, () => randomInt(10)).join('')
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
const alnum = (n: number): string => Array.from({ length: n }, () => ALNUM[randomInt(ALNUM.length)]).join('')
const YEAR_MS = 365 * 24 * 3600_000

interface Pair { publicKey: Key, privateKey: Key }
const rsaPair = (): Promise<Pair> => promisify(generateKeyPair)('rsa', { modulusLength: 2048 })

function certificate (serial: string, commonName: string, pair: Pair): string {
  const notBefore = new Date(Date.now() - 60_000)
  return selfSignedCertificate({ serial, commonName, notBefore, notAfter: new Date(notBefore.getTime() + 5 * YEAR_MS), ...pair })
}

const pem = {
  private: (pair: Pair) => pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  public: (pair: Pair) => pair.publicKey.export({ type: 'spki', format: 'pem' }) as string
}

async function create (dir: string, o: IdentityOverrides): Promise<void> {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const mchid = o.mchid ?? '1230000109'
  const merchantSerial = (o.merchantSerial ?? randomSerial()).toUpperCase()
  const platformSerial = randomSerial()
  const [merchant, publicKeyPair, platform] = await Promise.all([rsaPair(), rsaPair(), rsaPair()])
  const write = (file: string, data: string): void => writeFileSync(join(dir, file), data, { mode: 0o600 })
  write(FILES.merchantKey, pem.private(merchant))
  write(FILES.merchantCert, certificate(merchantSerial, `${mchid} merchant API certificate`, merchant))
  write(FILES.publicKey, pem.public(publicKeyPair))
  write(FILES.publicKeyPrivate, pem.private(publicKeyPair))
  write(FILES.platformCert, certificate(platformSerial, 'WeChat Pay sandbox platform certificate', platform))
  write(FILES.platformKey, pem.private(platform))
  const json: SandboxJson = {
    mchid,
    appid: o.appid ?? 'wxd678efh567hg6787',
    merchant_serial: merchantSerial,
    merchant_private_key_file: FILES.merchantKey,
    merchant_cert_file: FILES.merchantCert,
    wechatpay_public_key_id: o.publicKeyId ?? `PUB_KEY_ID_01${mchid}${digits(20)}`,
    wechatpay_public_key_file: FILES.publicKey,
    platform_cert_serial: platformSerial,
    platform_cert_file: FILES.platformCert,
    apiv3_key: alnum(32)
  }
  // sandbox.json is written last, atomically: its presence means the folder is complete.
  write(`${FILES.json}.tmp`, JSON.stringify(json, null, 2) + '\n')
  renameSync(join(dir, `${FILES.json}.tmp`), join(dir, FILES.json))
}

function exists (path: string): boolean {
  try {
    readFileSync(path)
    return true
  } catch {
    return false
  }
}

/** Loads the sandbox identity from `dir`, creating it on first use. */
export async function ensureIdentity (dir: string, overrides: IdentityOverrides = {}): Promise<SandboxIdentity> {
  if (!exists(join(dir, FILES.json))) await create(dir, overrides)
  const json = JSON.parse(readFileSync(join(dir, FILES.json), 'utf8')) as SandboxJson
  const path = (file: string): string => join(dir, file)
  const platformCertPem = readFileSync(path(json.platform_cert_file), 'utf8')
  return {
    dir,
    json,
    path,
    merchantPublicKey: createPublicKey(readFileSync(path(json.merchant_private_key_file), 'utf8')),
    publicKeySigner: createPrivateKey(readFileSync(path(FILES.publicKeyPrivate), 'utf8')),
    platformSigner: createPrivateKey(readFileSync(path(FILES.platformKey), 'utf8')),
    platformCertPem,
    platformCertExpiry: new Date(new X509Certificate(platformCertPem).validTo)
  }
}
