import { validate } from '@readme/openapi-parser'
import t from 'tap'
import { GATEWAY_ERRORS } from '../src/errors.js'
import { operations } from '../src/wechat/operations.js'
import { auth, secretsOf, testGateway } from './helpers.js'

/** Codes a GET cannot answer: it has no body (never read) and takes no Idempotency-Key. */
const NOT_FOR_GET = ['INVALID_JSON', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'IDEMPOTENCY_IN_PROGRESS', 'IDEMPOTENCY_OUTCOME_UNKNOWN',
  'IDEMPOTENCY_KEY_REUSED', 'IDEMPOTENCY_STORE_UNAVAILABLE', 'IDEMPOTENCY_STORE_FULL']

/** Every `required` in a JSON schema, as paths: `/collection/state`, `/post_payments[]/name`... */
function requiredPaths (schema: any, at = ''): string[] {
  if (schema === null || typeof schema !== 'object') return []
  return [
    ...((schema.required ?? []) as string[]).map(field => `${at}/${field}`),
    ...Object.entries(schema.properties ?? {}).flatMap(([name, field]) => requiredPaths(field, `${at}/${name}`)),
    ...requiredPaths(schema.items, `${at}[]`),
    ...[...(schema.anyOf ?? []), ...(schema.oneOf ?? []), ...(schema.allOf ?? [])].flatMap(s => requiredPaths(s, at))
  ]
}

t.test('the OpenAPI document is valid and documents every route, field and error', async t => {
  const { app, sandbox } = await testGateway(t)
  await app.ready()
  const doc = app.swagger() as Record<string, any>
  const result = await validate(structuredClone(doc) as never)
  t.equal(result.valid, true, JSON.stringify((result as { errors?: unknown }).errors ?? ''))
  t.equal(doc.openapi, '3.0.3')
  t.same(Object.keys(doc.paths).sort(), [
    '/contracts/{contract_id}/fail-notify',
    '/notifications',
    '/notifications/{merchant}/{id}',
    '/notifications/{merchant}/{id}/redeliver',
    '/papay/sign/contracts/plan-id/{plan_id}/out-contract-code/{out_contract_code}',
    '/papay/sign/partner/contracts/plan-id/{plan_id}/out-contract-code/{out_contract_code}',
    '/partner/contracts/{contract_id}/notify',
    '/payscore/partner/serviceorder',
    '/payscore/partner/serviceorder/{out_order_no}/pay'
  ], 'the operations, the queries and the notifications\' operator API: health and docs routes are hidden')

  for (const op of operations) {
    const path = op.route.replace(/:(\w+)/g, '{$1}')
    t.same(Object.keys(doc.paths[path]), [op.method.toLowerCase()], `${path}: ${op.method} only`)
    const route = doc.paths[path][op.method.toLowerCase()]
    t.equal(route.operationId, op.id)
    t.match(route.summary, /[\u4e00-\u9fff].* \/ [A-Za-z]/, 'summary in Chinese and English')
    t.same(route.security, [{ bearer: [] }])
    // A GET has no body and no Idempotency-Key: no 409, 413, 415 or 422.
    const errors = op.method === 'POST'
      ? ['400', '401', '403', '404', '408', '409', '413', '415', '422', '429', '431', '500', '502', '503', '504']
      : ['400', '401', '403', '404', '408', '429', '431', '500', '502', '503', '504']
    t.same(Object.keys(route.responses).sort(), [String(op.successStatus), ...errors].sort(), `${op.id}: the statuses it can answer`)
    for (const status of ['400', '502', '504']) t.ok(route.responses[status].content['application/json'].schema, `${status} documented`)
    for (const param of route.parameters) {
      t.match(param.description, /[\u4e00-\u9fff].*\/ [A-Za-z]/, `${param.name} described in both languages`)
      // Swagger UI sends an example value on every "Try it out": a fixed Idempotency-Key would make the second try a replay.
      if (param.in === 'header') t.equal(param.schema.example, undefined, `${param.name}: no example a browser would send by default`)
      else if (param.required === true) t.ok(param.schema.example, `${param.name} has an example`)
    }
    for (const code of Object.keys(GATEWAY_ERRORS).filter(c => c !== 'ROUTE_NOT_FOUND' && c !== 'METHOD_NOT_ALLOWED' && c !== 'NOTIFICATION_NOT_FOUND')) {
      const documented = Object.values(route.responses).some((r: any) => r.description.includes(`\`${code}\``))
      if (op.method === 'GET' && NOT_FOR_GET.includes(code)) t.notOk(documented, `${op.id}: ${code} cannot answer a GET`)
      else t.ok(documented, `${op.id}: ${code} is documented`)
    }
    if (op.method === 'POST') {
      t.equal(route.responses['204'].content, undefined, '204 has no body')
      t.ok(route.parameters.some((p: any) => p.name === 'idempotency-key'), 'operations take an Idempotency-Key')
      const body = route.requestBody.content['application/json'].schema
      t.ok(body.example, 'the body has an example')
      for (const [name, field] of Object.entries(body.properties as Record<string, { description?: string }>)) {
        t.match(field.description, /[\u4e00-\u9fff]/, `${op.id}.${name} is described`)
      }
    } else {
      t.equal(route.requestBody, undefined, 'a query has no body')
      t.notOk(route.parameters.some((p: any) => p.name === 'idempotency-key'), 'a query takes no Idempotency-Key')
      const answer = route.responses['200'].content['application/json'].schema
      // Only what the gateway checks is required: an answer without any other field is passed on (queries.test.ts).
      t.same(requiredPaths(answer).sort(), op.relied.map(field => `/${field}`).sort(), `${op.id}: only the fields callers rely on are required`)
      t.ok(answer.example, `${op.id}: the answer has an example`)
      t.ok(op.answer.safeParse(answer.example).success, `${op.id}: the example is a valid answer`)
      t.not(answer.additionalProperties, false, 'WeChat Pay may add fields')
      const inQuery = route.parameters.filter((p: any) => p.in === 'query').map((p: any) => p.name)
      t.ok(inQuery.includes(op.merchant.field), `${op.id}: the merchant is chosen by ${op.merchant.field} in the query`)
    }
  }
  // The PayScore order as the query answers it (the fields of the official page and the spec the SDKs use).
  const order = doc.paths['/payscore/partner/serviceorder'].get.responses['200'].content['application/json'].schema
  for (const field of ['out_order_no', 'service_id', 'appid', 'mchid', 'sub_appid', 'sub_mchid', 'service_introduction', 'state',
    'state_description', 'post_payments', 'post_discounts', 'risk_fund', 'total_amount', 'need_collection', 'collection',
    'time_range', 'location', 'attach', 'notify_url', 'openid', 'sub_openid', 'order_id']) {
    t.match(order.properties[field]?.description, /[\u4e00-\u9fff].*\/ [A-Za-z]/, `the order's ${field} is documented`)
  }
  t.ok(order.properties.collection.properties.details.items.properties.promotion_detail, 'collection.details[].promotion_detail')
  for (const [name, list] of [['post_payments', true], ['post_discounts', true], ['risk_fund', false], ['time_range', false], ['location', false]] as const) {
    const schema = list ? order.properties[name].items : order.properties[name]
    t.ok(Object.keys(schema.properties).length > 0, `${name}'s fields are documented`)
  }

  const notify = doc.paths['/partner/contracts/{contract_id}/notify'].post.requestBody.content['application/json'].schema
  t.same(notify.required, ['sub_mchid', 'estimated_amount'], 'merchant fields are optional for callers')
  t.equal(notify.additionalProperties, false)
  t.same(Object.keys(doc.components.schemas).sort(), ['Error', 'NotificationRecord'], 'shared components, and nothing unused is listed')
  t.same(doc.paths['/notifications/{merchant}/{id}/redeliver'].post.security, [{ bearer: [] }])
  t.same(doc.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', description: 'A caller token from GATEWAY_TOKENS' })

  const text = JSON.stringify(doc)
  for (const secret of [...secretsOf(sandbox), ...sandbox.merchants.all.map(m => m.ids.merchant_serial)]) t.notOk(text.includes(secret), 'no secret or key id in the document')
})

t.test('a GET never reads a body: no 413 or 415 can answer a query, as its OpenAPI document says', async t => {
  const { app } = await testGateway(t)
  const res = await app.inject({
    method: 'GET',
    url: '/payscore/partner/serviceorder?service_id=2002000000000558128851361561536&out_order_no=g-1&sub_mchid=1900000109',
    headers: { ...auth(), 'content-type': 'text/plain' },
    payload: 'x'.repeat(20 * 1024)
  })
  t.equal(res.statusCode, 200, 'a 20 KiB text/plain body on a GET is ignored')
})

t.test('/docs serves Swagger UI and /docs/json the document; both can be switched off', async t => {
  const { app } = await testGateway(t)
  const ui = await app.inject({ method: 'GET', url: '/docs/' })
  t.equal(ui.statusCode, 200)
  t.match(ui.body, /swagger-ui/i)
  const json = await app.inject({ method: 'GET', url: '/docs/json' })
  t.equal(json.json().info.title, 'WeChat Pay v3 gateway')
  const { app: closed } = await testGateway(t, { config: { docs: false } })
  t.equal((await closed.inject({ method: 'GET', url: '/docs/json' })).statusCode, 404)
})
