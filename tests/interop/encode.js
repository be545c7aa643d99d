// Encodes one event with the avsc library (not avro-c) from a .avsc file alone,
// framed in the Confluent wire format: 0x00, schema id (int32 big-endian), Avro.
//   node encode.js <schema.avsc> <schema id> '<event JSON>' <out file>
// Timestamps in the JSON are epoch milliseconds; optional fields may be omitted.
'use strict';
const fs = require('fs');
const avro = require('avsc');

const [schemaPath, idText, json, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node encode.js <schema.avsc> <schema id> <event JSON> <out file>');
  process.exit(2);
}
// For a topic's union schema the event names its branch: {"PageUpserted": {...}};
// the body is then the branch index (zig-zag varint) and the record, as the
// Avro spec encodes a union.
const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
const event = JSON.parse(json);
let body;
if (Array.isArray(schema)) {
  const [name] = Object.keys(event);
  const index = schema.findIndex((s) => s.name === name);
  if (index < 0) throw new Error(`no branch ${name} in ${schemaPath}`);
  const branch = avro.Type.forSchema(schema[index]);
  const record = branch.toBuffer(branch.clone(event[name], { wrapUnions: false }));
  body = Buffer.concat([Buffer.from([index << 1]), record]);
} else {
  const type = avro.Type.forSchema(schema);
  body = type.toBuffer(type.clone(event, { wrapUnions: false }));
}
const header = Buffer.alloc(5);
header.writeUInt8(0, 0);
header.writeInt32BE(Number(idText), 1);
fs.writeFileSync(outPath, Buffer.concat([header, body]));
