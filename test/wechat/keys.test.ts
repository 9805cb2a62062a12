import { createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { sandboxSettings } from '../../src/sandbox/settings.js'
import { selfSignedCertificate } from '../../src/sandbox/certificate.js'
import { KeyError } from '../../src/wechat/keys.js'
import { loadKeys, type MerchantConfig } from '../../src/wechat/profile.js'
import { fixture, vectors } from '../helpers.js'

const base: MerchantConfig = {
  name: 'default',
  types: ['direct'],
  baseUrl: 'http://127.0.0.1:1',
  mchid: vectors.merchant.mchid,
  merchantSerial: vectors.merchant.serial_no,
  privateKeyFile: fixture('merchant-test-key.pem'),
  keyMode: 'public-key',
  publicKeyId: vectors.platform.public_key_id,
  publicKeyFile: fixture('platform-test-pub.pem'),
  labels: { privateKeyFile: 'WECHATPAY_PRIVATE_KEY_FILE', merchantCertFile: 'WECHATPAY_MERCHANT_CERT_FILE', merchantSerial: 'WECHATPAY_MERCHANT_SERIAL', publicKeyFile: 'WECHATPAY_PUBLIC_KEY_FILE', apiv3Key: 'WECHATPAY_APIV3_KEY' }
}

function problems (settings: Partial<MerchantConfig>): string[] {
  try {
    loadKeys({ ...base, ...settings })
    return []
  } catch (err) {
    if (err instanceof KeyError) return err.problems
    throw err
  }
}

t.test('start-up self-check of key material', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-keys-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = async (name: string, data: string) => { await writeFile(join(dir, name), data); return join(dir, name) }

  const pkcs1 = await file('pkcs1.pem', createPrivateKey(readFileSync(base.privateKeyFile)).export({ type: 'pkcs1', format: 'pem' }) as string)
  t.same(problems({ privateKeyFile: pkcs1 }), [], 'PKCS#1 is accepted')
  t.same(problems({}), [], 'PKCS#8 is accepted')
  const { identity, publicKey } = loadKeys(base)
  t.equal(identity.privateKey.type, 'private')
  t.equal(publicKey?.id, vectors.platform.public_key_id)

  const small = await file('small.pem', generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string)
  t.match(problems({ privateKeyFile: small }), [/at least 2048 bits \(found rsa 1024 bits\)/])
  const ec = await file('ec.pem', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string)
  t.match(problems({ privateKeyFile: ec }), [/must be an RSA key/])
  const junk = await file('junk.pem', 'not a key')
  t.match(problems({ privateKeyFile: junk }), [/is not a PEM private key/])
  t.match(problems({ privateKeyFile: join(dir, 'absent.pem') }), [/cannot read .*\(ENOENT\)/])
  t.match(problems({ publicKeyFile: junk }), [/WECHATPAY_PUBLIC_KEY_FILE: .* is not a PEM public key/])
  const ecPub = await file('ec-pub.pem', generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string)
  t.match(problems({ publicKeyFile: ecPub }), [/must hold an RSA public key/])
  t.match(problems({ publicKeyFile: fixture('merchant-test-pub.pem') }), [/holds the merchant's own public key/], 'the most common mix-up is caught')
  t.match(problems({ privateKeyFile: junk, publicKeyFile: junk }).length, 2, 'every problem at once')

  // Merchant certificate: serial and key must match.
  const privateKey = createPrivateKey(readFileSync(base.privateKeyFile))
  const cert = (serial: string, key = privateKey) => selfSignedCertificate({ serial, commonName: 'm', notBefore: new Date(), notAfter: new Date(Date.now() + 1e9), publicKey: createPublicKey(key), privateKey: key })
  t.same(problems({ merchantCertFile: await file('ok.crt', cert(base.merchantSerial)) }), [])
  t.match(problems({ merchantCertFile: await file('serial.crt', cert('1234')) }), [/WECHATPAY_MERCHANT_SERIAL is .* but the merchant certificate's serial is 1234/])
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  t.match(problems({ merchantCertFile: await file('other.crt', cert(base.merchantSerial, other)) }), [/does not belong to the merchant certificate/])
  t.match(problems({ merchantCertFile: junk }), [/is not a PEM certificate/])
  // A serial whose first hex digit is 8-F must stay positive in DER (the Go SDK's test serial is one).
  for (const serial of ['F5765756002FDD77', '8000000000000000000000000000000000000001', '7FFF']) {
    t.equal(new X509Certificate(cert(serial)).serialNumber, serial, `serial ${serial} reads back as written`)
  }
  // The sandbox takes only serials that read back as written: whole bytes, no leading 00.
  for (const serial of ['F5765756002FDD77', '0ABCDEF1', '7FFF7FFF']) t.ok(sandboxSettings.safeParse({ SANDBOX_MERCHANT_SERIAL: serial }).success, serial)
  for (const serial of ['F5765756002FDD7', '00ABCDEF12', '0012345678', '1234567']) {
    t.match(sandboxSettings.safeParse({ SANDBOX_MERCHANT_SERIAL: serial }), { success: false }, `${serial} would not read back as written`)
  }
  t.equal(new KeyError(['x']).message, 'x')
})
