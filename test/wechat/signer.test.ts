import { createPrivateKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import t from 'tap'
import { authorizationHeader, createNonce, requestMessage, signMessage, signRequest } from '../../src/wechat/signer.js'
import { fixture, vectors } from '../helpers.js'

const privateKey = createPrivateKey(readFileSync(fixture('merchant-test-key.pem')))
const merchant = { mchid: vectors.merchant.mchid, serial: vectors.merchant.serial_no, privateKey }

t.test('the five-line message, signature and Authorization header match the openssl vectors', async t => {
  for (const v of vectors.requests) {
    const message = requestMessage(v.method, v.url, v.timestamp, v.nonce, v.body)
    t.equal(message, v.message, `${v.method} ${v.url}: message`)
    const signature = await signMessage(message, privateKey)
    t.equal(signature, v.signature, `${v.method} ${v.url}: signature`)
    t.equal(authorizationHeader(merchant, v.nonce, v.timestamp, signature), v.authorization, `${v.method} ${v.url}: header`)
  }
})

t.test('a GET with an empty body still has five lines', async t => {
  t.equal(requestMessage('GET', '/v3/certificates', '1', 'N', ''), 'GET\n/v3/certificates\n1\nN\n\n')
})

t.test('signRequest signs what it is given, with a fresh nonce and the current second', async t => {
  const v = vectors.requests[0]!
  const signed = await signRequest(merchant, v.method, v.url, v.body, Number(v.timestamp) * 1000 + 999)
  const nonce = /nonce_str="([^"]+)"/.exec(signed.authorization)?.[1] ?? ''
  t.match(signed.authorization, /^WECHATPAY2-SHA256-RSA2048 mchid="1230000109",nonce_str="[0-9A-F]{32}",signature="[A-Za-z0-9+/]+={0,2}",timestamp="1554208460",serial_no="5A3F0C2B9E71D4A8C6B2E0F19D3A7C5E8B4F6D21"$/)
  t.equal(signed.message, requestMessage(v.method, v.url, v.timestamp, nonce, v.body))
  const again = await signRequest(merchant, v.method, v.url, v.body, Number(v.timestamp) * 1000)
  t.not(again.authorization, signed.authorization, 'a new nonce each time')
})

t.test('nonces are 32 characters of [0-9A-F] and do not repeat', async t => {
  const seen = new Set(Array.from({ length: 1000 }, createNonce))
  t.equal(seen.size, 1000)
  for (const n of seen) t.match(n, /^[0-9A-F]{32}$/)
})
