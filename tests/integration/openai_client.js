// OpenAI's own Node SDK (pinned in mk/clients.mk) against billingd's
// internal endpoint.  node openai_client.js SDK_DIR BASE_URL API_KEY
// prints one JSON object with what each call returned.
'use strict';
const [sdkDir, baseURL, apiKey] = process.argv.slice(2);
const OpenAI = require(sdkDir).default;

async function main() {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
  const out = {};
  const user = { role: 'user', content: 'Say hello to the billing team.' };
  // models.list(): GET /models
  const models = await client.models.list();
  out.models = models.data;
  // max_completion_tokens is honoured
  const a = await client.chat.completions.create({
    model: 'internal-tiny', messages: [user], max_completion_tokens: 3, temperature: 0 });
  out.max_completion_tokens = { usage: a.usage, finish_reason: a.choices[0].finish_reason,
                                content: a.choices[0].message.content };
  const b = await client.chat.completions.create({
    model: 'internal-tiny', messages: [user], max_tokens: 4, temperature: 0 });
  out.max_tokens = { usage: b.usage, finish_reason: b.choices[0].finish_reason };
  // content as an array of text parts
  const c = await client.chat.completions.create({
    model: 'internal-tiny', temperature: 0, max_completion_tokens: 3,
    messages: [{ role: 'system', content: [{ type: 'text', text: 'You are terse.' }] },
               { role: 'user', content: [{ type: 'text', text: 'Say hello' }, { type: 'text', text: 'to the billing team.' }] }] });
  out.parts = { usage: c.usage, content: c.choices[0].message.content };
  // streams: a usage chunk only when include_usage asks for it
  for (const [name, extra] of [['stream_plain', {}], ['stream_usage', { stream_options: { include_usage: true } }]]) {
    const s = await client.chat.completions.create({
      model: 'internal-tiny', messages: [user], max_completion_tokens: 3, temperature: 0, stream: true, ...extra });
    const chunks = [];
    for await (const ch of s) chunks.push(ch);
    out[name] = chunks;
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e), status: e.status ?? null }) + '\n');
  process.exit(1);
});
