import fp from 'fastify-plugin'
import { createPublicKey } from 'node:crypto'
import type { Dispatcher } from 'undici'
import { WechatPayClient } from '../wechat/client.js'
import { checkMerchantCertificate, KeyError, KeyRing, loadPrivateKey, loadPublicKey, sameKey } from '../wechat/keys.js'
import type { MerchantIdentity } from '../wechat/signer.js'
import type { WechatConfig } from './config.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The WeChat Pay client. The only holder of key material; nothing else in the app can read a key. */
    wechat: WechatPayClient
    /** The merchant's own ids, used as body defaults. Not secret. */
    merchant: { mchid: string, appid?: string }
  }
}

export interface CredentialsOptions {
  wechat: WechatConfig
  dispatcher?: Dispatcher
}

/** Reads and checks every key file once, listing every problem at once. */
export function loadCredentials (wechat: WechatConfig): { merchant: MerchantIdentity, keys: KeyRing } {
  const problems: string[] = []
  const privateKey = loadPrivateKey(wechat.privateKeyFile, 'WECHATPAY_PRIVATE_KEY_FILE', problems)
  if (wechat.merchantCertFile !== undefined) {
    checkMerchantCertificate(wechat.merchantCertFile, wechat.merchantSerial, privateKey, problems)
  }
  const keys = new KeyRing(wechat.merchantSerial)
  if (wechat.publicKeyId !== undefined && wechat.publicKeyFile !== undefined) {
    const publicKey = loadPublicKey(wechat.publicKeyFile, 'WECHATPAY_PUBLIC_KEY_FILE', problems)
    if (publicKey !== undefined && privateKey !== undefined && sameKey(publicKey, createPublicKey(privateKey))) {
      problems.push('WECHATPAY_PUBLIC_KEY_FILE holds the merchant\'s own public key: it must be WeChat Pay\'s public key (商户平台 > API安全 > 微信支付公钥)')
    } else if (publicKey !== undefined) {
      keys.setPublicKey(wechat.publicKeyId, publicKey)
    }
  }
  if (problems.length > 0 || privateKey === undefined) throw new KeyError(problems)
  return { merchant: { mchid: wechat.mchid, serial: wechat.merchantSerial, privateKey }, keys }
}

async function credentials (app: import('fastify').FastifyInstance, opts: CredentialsOptions): Promise<void> {
  const { merchant, keys } = loadCredentials(opts.wechat)
  const client = new WechatPayClient({
    baseUrl: opts.wechat.baseUrl,
    backupBaseUrl: opts.wechat.backupBaseUrl,
    timeoutMs: opts.wechat.timeoutMs,
    merchant: () => merchant,
    keys,
    publicKeyId: opts.wechat.publicKeyId,
    ...(opts.dispatcher !== undefined && { dispatcher: opts.dispatcher })
  })
  app.decorate('wechat', client)
  app.decorate('merchant', { mchid: opts.wechat.mchid, ...(opts.wechat.appid !== undefined && { appid: opts.wechat.appid }) })
  app.addHook('onClose', async () => { await client.close() })
}

export default fp(credentials, { name: 'credentials', fastify: '5.x' })
