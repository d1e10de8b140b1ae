#!/usr/bin/env node
// Eclipse Tahu's JavaScript Sparkplug B codec (npm sparkplug-payload) as a JSON filter for
// Plantbus's interop tests. One process handles a whole batch, so a test run starts node once.
//
// stdin:  {"op": "decode", "items": [{"id": "...", "b64": "<payload bytes>"}, ...]}
//      or {"op": "encode", "items": [{"id": "...", "payload": <Tahu payload object>}, ...]}
// stdout: {"results": {"<id>": {...}, ...}}
//   decode -> {"tahu": <what Tahu's decodePayload returns>, "raw": <protobuf fields as sent>}
//   encode -> {"b64": "<what Tahu's encodePayload returns>"}
//   a per-item failure -> {"error": "<message>"}  (Tahu throws on some valid payloads)
//
// JSON cannot carry 64-bit integers, bytes or NaN, so both directions use tagged values:
//   {"$long": "<decimal>", "unsigned": true|false}, {"$bytes": "<base64>"}, {"$float": "nan"|"inf"|"-inf"}
'use strict';

const sparkplug = require('sparkplug-payload');
const proto = require('sparkplug-payload/lib/sparkplugPayloadProto');
// `long` is the Long class Tahu itself uses; resolve it from Tahu's location, not a hoisted guess.
const Long = require(require.resolve('long', { paths: [require.resolve('sparkplug-payload')] }));

const tahu = sparkplug.get('spBv1.0');
const RawPayload = proto.org.eclipse.tahu.protobuf.Payload;

function toJson(value) {
  if (value === null || value === undefined) return null;
  if (Long.isLong(value)) return { $long: value.toString(), unsigned: value.unsigned };
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString('base64') };
  if (typeof value === 'number' && !Number.isFinite(value)) {
    return { $float: Number.isNaN(value) ? 'nan' : value > 0 ? 'inf' : '-inf' };
  }
  if (Array.isArray(value)) return value.map(toJson);
  if (typeof value === 'object') {
    const out = {};
    for (const key of Object.keys(value)) out[key] = toJson(value[key]);
    return out;
  }
  return value;
}

function fromJson(value) {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(fromJson);
  if ('$long' in value) return Long.fromString(value.$long, Boolean(value.unsigned));
  if ('$bytes' in value) return Buffer.from(value.$bytes, 'base64');
  if ('$float' in value) return { nan: NaN, inf: Infinity, '-inf': -Infinity }[value.$float];
  const out = {};
  for (const key of Object.keys(value)) out[key] = fromJson(value[key]);
  return out;
}

function rawView(bytes) {
  // The fields exactly as they are on the wire (uint64 as unsigned decimal strings), for checks
  // that must not depend on Tahu's interpretation, e.g. "which oneof field carries the value".
  const message = RawPayload.decode(bytes);
  return RawPayload.toObject(message, { longs: String, bytes: String, oneofs: true });
}

function handle(op, item) {
  if (op === 'decode') {
    const bytes = Buffer.from(item.b64, 'base64');
    const out = { raw: toJson(rawView(bytes)) };
    try {
      out.tahu = toJson(tahu.decodePayload(bytes));
    } catch (err) {
      out.error = String(err && err.message ? err.message : err);
    }
    return out;
  }
  if (op === 'encode') {
    return { b64: Buffer.from(tahu.encodePayload(fromJson(item.payload))).toString('base64') };
  }
  throw new Error(`unknown op ${op}`);
}

function main() {
  const chunks = [];
  process.stdin.on('data', (chunk) => chunks.push(chunk));
  process.stdin.on('end', () => {
    const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const results = {};
    for (const item of request.items) {
      try {
        results[item.id] = handle(request.op, item);
      } catch (err) {
        results[item.id] = { error: String(err && err.message ? err.message : err) };
      }
    }
    process.stdout.write(JSON.stringify({ results }));
  });
}

main();
