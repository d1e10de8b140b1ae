#!/usr/bin/env node
// An Eclipse Tahu edge node (npm sparkplug-client) driven by Plantbus's live interop tests.
//
// argv[2]: JSON {serverUrl, groupId, edgeNode, clientId, deviceId, nodeMetrics, deviceMetrics, updates}
//   nodeMetrics / deviceMetrics: Tahu metric objects for NBIRTH / DBIRTH (tagged values, see tahu_codec.js)
//   updates: a list of DDATA metric lists, published in order right after the births
// stdin:  JSON lines {"cmd": "ddata", "metrics": [...]} | {"cmd": "stop"}
// stdout: JSON lines {"event": "connected" | "births" | "ddata" | "rebirth" | "dcmd" | "ncmd" | "stopped" | "error", ...}
//
// Behaviour is Tahu's own: births on the client's "birth" event, a rebirth on NCMD
// 'Node Control/Rebirth', and a DCMD written metric echoed back as DDATA (what a device does).
'use strict';

const readline = require('readline');
const sparkplugClient = require('sparkplug-client');
const Long = require(require.resolve('long', { paths: [require.resolve('sparkplug-payload')] }));

const config = JSON.parse(process.argv[2]);

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

function emit(event, extra) {
  process.stdout.write(JSON.stringify({ event, ...extra }) + '\n');
}

const client = sparkplugClient.newClient({
  serverUrl: config.serverUrl,
  username: '',
  password: '',
  groupId: config.groupId,
  edgeNode: config.edgeNode,
  clientId: config.clientId,
  publishDeath: true,
  version: 'spBv1.0',
  // don't retry forever behind a test's back
  mqttOptions: { reconnectPeriod: 0 },
});

const deviceValues = new Map();

function metricsWithTimestamp(metrics) {
  const now = Date.now();
  // fresh objects every time: Tahu mutates the payload it is given (it pushes bdSeq into NBIRTH metrics)
  return fromJson(metrics).map((m) => ({ timestamp: now, ...m }));
}

function publishBirths() {
  client.publishNodeBirth({ timestamp: Date.now(), metrics: metricsWithTimestamp(config.nodeMetrics) });
  const deviceMetrics = metricsWithTimestamp(config.deviceMetrics);
  for (const m of deviceMetrics) {
    // later DDATA and DCMD refer to a metric by alias or name; keep both with the current value
    deviceValues.set(m.name, m);
    if (m.alias !== undefined) deviceValues.set(`alias:${m.alias}`, m);
  }
  client.publishDeviceBirth(config.deviceId, { timestamp: Date.now(), metrics: deviceMetrics });
}

client.on('connect', () => emit('connected'));

let firstBirth = true;
client.on('birth', () => {
  publishBirths();
  emit('births');
  if (firstBirth) {
    firstBirth = false;
    (config.updates || []).forEach((metrics, n) => {
      client.publishDeviceData(config.deviceId, { timestamp: Date.now(), metrics: metricsWithTimestamp(metrics) });
      emit('ddata', { n });
    });
  }
});

client.on('ncmd', (payload) => {
  emit('ncmd', { payload: toJson(payload) });
  for (const m of payload.metrics || []) {
    if (m.name === 'Node Control/Rebirth' && m.value === true) {
      publishBirths();
      emit('rebirth');
    }
  }
});

client.on('dcmd', (deviceId, payload) => {
  emit('dcmd', { deviceId, payload: toJson(payload) });
  const echoed = [];
  for (const m of payload.metrics || []) {
    const known = deviceValues.get(m.name) || deviceValues.get(`alias:${m.alias}`);
    if (!known) continue;
    known.value = m.value;
    echoed.push({ name: known.name, alias: known.alias, type: known.type, value: m.value, timestamp: Date.now() });
  }
  if (echoed.length) client.publishDeviceData(deviceId, { timestamp: Date.now(), metrics: echoed });
});

client.on('error', (err) => emit('error', { message: String(err && err.message ? err.message : err) }));

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  // Tahu publishes NDEATH (publishDeath: true), then ends the MQTT connection cleanly
  client.on('close', () => {
    emit('stopped');
    process.exit(0);
  });
  client.stop();
  setTimeout(() => process.exit(0), 3000).unref();
}

const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (cmd.cmd === 'ddata') {
    client.publishDeviceData(config.deviceId, { timestamp: Date.now(), metrics: metricsWithTimestamp(cmd.metrics) });
    emit('ddata', { n: -1 });
  } else if (cmd.cmd === 'stop') {
    stop();
  }
});
input.on('close', stop);
