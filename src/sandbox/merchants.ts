import { createPrivateKey, createPublicKey, generateKeyPair, randomBytes, randomInt, X509Certificate, type KeyObject as Key } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { KeyMode, MerchantType } from '../wechat/profile.js'
import { selfSignedCertificate } from './certificate.js'
import type { MerchantSpec } from './settings.js'

/**
 * The WeChat Pay accounts the simulator plays: by default a direct merchant (普通商户) and a service provider
 * (服务商), each with its own merchant key and certificate, WeChat Pay public key and PUB_KEY_ID, platform
 * certificate and APIv3 key. Keys are made on first start in SANDBOX_DIR (one folder per merchant) and reused after.
 * At every start the simulator writes what a client needs:
 * - `merchants.json`, in the format of WECHATPAY_MERCHANTS_FILE (so `WECHATPAY_MERCHANTS_FILE=.sandbox/merchants.json`
 *   works as is), for the current key mode;
 * - `sandbox.json`, the direct merchant alone, for official SDKs (its format predates merchant profiles).
 * The simulator's own private keys sit beside them under fixed names and are never listed.
 */

export const DEFAULT_MERCHANTS: readonly MerchantSpec[] = [
  { name: 'direct', type: 'direct', mchid: '1230000109' },
  { name: 'partner', type: 'partner', mchid: '1900000100' }
]

/** What `ids.json` in a merchant's folder holds: ids fixed when its keys were made. */
interface MerchantIds {
  name: string
  type: MerchantType
  mchid: string
  appid: string
  merchant_serial: string
  wechatpay_public_key_id: string
  platform_cert_serial: string
}

export interface SandboxMerchant {
  ids: MerchantIds
  /** Files of this merchant, relative to SANDBOX_DIR. */
  files: typeof FILES
  folder: string
  apiv3Key: string
  merchantPublicKey: Key
  /** The simulator's keys: the WeChat Pay public-key pair and the platform certificate's pair. */
  publicKeySigner: Key
  platformSigner: Key
  platformCertPem: string
  platformCertExpiry: Date
}

export interface SandboxMerchants {
  dir: string
  all: SandboxMerchant[]
  byMchid: (mchid: string) => SandboxMerchant | undefined
  /** Absolute path of a file of `merchant`. */
  path: (merchant: SandboxMerchant, file: string) => string
  /** The merchant profiles file (merchants.json), written for `keyMode`: its path. */
  writeProfiles: (keyMode: KeyMode, file?: string) => string
}

const FILES = {
  ids: 'ids.json',
  merchantKey: 'apiclient_key.pem',
  merchantCert: 'apiclient_cert.pem',
  publicKey: 'wechatpay_public_key.pem',
  publicKeyPrivate: 'simulator_public_key_private.pem',
  platformCert: 'wechatpay_platform_cert.pem',
  platformKey: 'simulator_platform_private.pem',
  apiv3Key: 'apiv3_key'
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

/** Writes a file atomically (a reader never sees half of it), readable by its owner only. */
function write (path: string, data: string): void {
  writeFileSync(`${path}.tmp`, data, { mode: 0o600 })
  renameSync(`${path}.tmp`, path)
}

async function create (folder: string, spec: MerchantSpec): Promise<void> {
  mkdirSync(folder, { recursive: true, mode: 0o700 })
  const merchantSerial = (spec.merchantSerial ?? randomSerial()).toUpperCase()
  const platformSerial = randomSerial()
  const [merchant, publicKeyPair, platform] = await Promise.all([rsaPair(), rsaPair(), rsaPair()])
  const file = (name: string): string => join(folder, name)
  write(file(FILES.merchantKey), pem.private(merchant))
  write(file(FILES.merchantCert), certificate(merchantSerial, `${spec.mchid} merchant API certificate`, merchant))
  write(file(FILES.publicKey), pem.public(publicKeyPair))
  write(file(FILES.publicKeyPrivate), pem.private(publicKeyPair))
  write(file(FILES.platformCert), certificate(platformSerial, 'WeChat Pay sandbox platform certificate', platform))
  write(file(FILES.platformKey), pem.private(platform))
  write(file(FILES.apiv3Key), alnum(32))
  const ids: MerchantIds = {
    name: spec.name,
    type: spec.type,
    mchid: spec.mchid,
    appid: spec.appid ?? 'wxd678efh567hg6787',
    merchant_serial: merchantSerial,
    wechatpay_public_key_id: spec.publicKeyId ?? `PUB_KEY_ID_01${spec.mchid}${digits(20)}`,
    platform_cert_serial: platformSerial
  }
  // ids.json is written last: its presence means the folder is complete.
  write(file(FILES.ids), JSON.stringify(ids, null, 2) + '\n')
}

function load (folder: string): SandboxMerchant {
  const file = (name: string): string => join(folder, name)
  const ids = JSON.parse(readFileSync(file(FILES.ids), 'utf8')) as MerchantIds
  const platformCertPem = readFileSync(file(FILES.platformCert), 'utf8')
  return {
    ids,
    files: FILES,
    folder,
    apiv3Key: readFileSync(file(FILES.apiv3Key), 'utf8'),
    merchantPublicKey: createPublicKey(readFileSync(file(FILES.merchantKey), 'utf8')),
    publicKeySigner: createPrivateKey(readFileSync(file(FILES.publicKeyPrivate), 'utf8')),
    platformSigner: createPrivateKey(readFileSync(file(FILES.platformKey), 'utf8')),
    platformCertPem,
    platformCertExpiry: new Date(new X509Certificate(platformCertPem).validTo)
  }
}

/** Loads the sandbox's merchants from `dir`, making the keys of any that does not exist yet. */
export async function ensureMerchants (dir: string, specs: readonly MerchantSpec[] = DEFAULT_MERCHANTS): Promise<SandboxMerchants> {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  await Promise.all(specs.filter(s => !existsSync(join(dir, s.name, FILES.ids))).map(s => create(join(dir, s.name), s)))
  const all = specs.map(s => load(join(dir, s.name)))
  const rel = (m: SandboxMerchant, name: string): string => `${m.ids.name}/${name}`
  const writeProfiles = (keyMode: KeyMode, file = 'merchants.json'): string => {
    const profiles = all.map(m => ({
      name: m.ids.name,
      type: m.ids.type,
      mchid: m.ids.mchid,
      appid: m.ids.appid,
      merchant_serial: m.ids.merchant_serial,
      private_key_file: rel(m, FILES.merchantKey),
      merchant_cert_file: rel(m, FILES.merchantCert),
      key_mode: keyMode,
      public_key_id: m.ids.wechatpay_public_key_id,
      public_key_file: rel(m, FILES.publicKey),
      apiv3_key_file: rel(m, FILES.apiv3Key)
    }))
    const path = join(dir, file)
    write(path, JSON.stringify(profiles, null, 2) + '\n')
    const direct = all.find(m => m.ids.type === 'direct')
    if (direct !== undefined) {
      write(join(dir, 'sandbox.json'), JSON.stringify({
        mchid: direct.ids.mchid,
        appid: direct.ids.appid,
        merchant_serial: direct.ids.merchant_serial,
        merchant_private_key_file: rel(direct, FILES.merchantKey),
        merchant_cert_file: rel(direct, FILES.merchantCert),
        wechatpay_public_key_id: direct.ids.wechatpay_public_key_id,
        wechatpay_public_key_file: rel(direct, FILES.publicKey),
        platform_cert_serial: direct.ids.platform_cert_serial,
        platform_cert_file: rel(direct, FILES.platformCert),
        apiv3_key: direct.apiv3Key
      }, null, 2) + '\n')
    }
    return path
  }
  const byMchid = new Map(all.map(m => [m.ids.mchid, m]))
  return { dir, all, byMchid: mchid => byMchid.get(mchid), path: (m, file) => join(m.folder, file), writeProfiles }
}
