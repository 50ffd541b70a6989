#!/usr/bin/env node
// bluegreen's own compatibility probe (not ocore code): reads a RocksDB dir with the node's npm
// level-rocksdb, and optionally an SQLite file with the node's npm sqlite3, and prints JSON lines.
//
//   node probe.js --node-modules DIR --kv DIR [--dump] [--write-check] [--get-every N]
//                 [--sqlite FILE] [--sqlite-rows N]
//
// Libraries are resolved the way the node resolves them: from a module placed in DIR's parent, so
// DIR = <app>/node_modules/ocore/node_modules also finds <app>/node_modules/sqlite3.
// Output, one JSON object a line:
//   {"t":"kv","k":<base64>,"v":<base64>}        every entry in key order (only with --dump)
//   {"t":"error","stage":...,"message":...}     the first failure (exit code 1)
//   {"t":"summary",...}                         always last when the probe got that far
// The KV dir is opened read-write, as the node opens it (RocksDB writes into any dir it opens): run it
// on a copy. --write-check then also writes, compacts, closes and re-opens the dir (node-side writes).
// The SQLite file is opened read-only.
'use strict'

const crypto = require('crypto')
const path = require('path')
const { createRequire } = require('module')
const { once } = require('events')

function parseArgs (argv) {
  const args = { dump: false, writeCheck: false, sqliteRows: 5, getEvery: 1 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--node-modules') args.nodeModules = argv[++i]
    else if (a === '--kv') args.kv = argv[++i]
    else if (a === '--sqlite') args.sqlite = argv[++i]
    else if (a === '--sqlite-rows') args.sqliteRows = parseInt(argv[++i], 10)
    else if (a === '--get-every') args.getEvery = parseInt(argv[++i], 10)
    else if (a === '--dump') args.dump = true
    else if (a === '--write-check') args.writeCheck = true
    else throw new Error('unknown argument ' + a)
  }
  if (!args.nodeModules) throw new Error('--node-modules is required')
  return args
}

// stdout to a pipe is asynchronous: wait for 'drain' so a dump of a big store is never all in memory.
async function emit (obj) {
  if (!process.stdout.write(JSON.stringify(obj) + '\n')) await once(process.stdout, 'drain')
}

// The last line, then exit once it (and so everything before it) has reached the pipe: exiting
// straight away would cut pending output short.
function finish (obj, code) {
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code))
}

class StageError extends Error {
  constructor (stage, err) {
    super(err && err.message ? err.message : String(err))
    this.stage = stage
  }
}

async function stage (name, fn) {
  try {
    return await fn()
  } catch (err) {
    if (err instanceof StageError) throw err
    throw new StageError(name, err)
  }
}

// The same digest as bluegreen.nodecompat.probe.kv_digest: sha256 over (u64be len, key, u64be len, value).
function lengthPrefix (buf) {
  const len = Buffer.alloc(8)
  len.writeBigUInt64BE(BigInt(buf.length))
  return len
}

function isUtf8 (buf) {
  // The node reads keys and values as UTF-8 strings; bytes that do not survive that round trip
  // would reach it altered.
  return Buffer.from(buf.toString('utf8'), 'utf8').equals(buf)
}

const BINARY = { keyEncoding: 'binary', valueEncoding: 'binary' }

function openDb (levelRocksdb, location) {
  return new Promise((resolve, reject) => {
    // The node opens with level-rocksdb defaults (kvstore.js passes {}); only the encodings differ here,
    // so that we see the exact bytes. createIfMissing:false: a probe must never create an empty store.
    const db = levelRocksdb(location, { createIfMissing: false }, (err) => (err ? reject(err) : resolve(db)))
  })
}

function nextEntry (it) {
  return new Promise((resolve, reject) => {
    it.next((err, key, value) => (err ? reject(err) : resolve(key === undefined ? null : [key, value])))
  })
}

function endIterator (it) {
  return new Promise((resolve, reject) => it.end((err) => (err ? reject(err) : resolve())))
}

// Reads every entry by iteration and, for every getEvery-th one (0: none), by a point lookup too
// (the node's main access path).
async function readAll (db, dump, getEvery) {
  const hash = crypto.createHash('sha256')
  const res = { keys_read: 0, bytes_read: 0, non_utf8_entries: 0, gets: 0, get_mismatches: 0 }
  const it = db.db.db.iterator({ keyAsBuffer: true, valueAsBuffer: true })
  try {
    for (;;) {
      const entry = await nextEntry(it)
      if (entry === null) break
      const [key, value] = entry
      hash.update(lengthPrefix(key)); hash.update(key); hash.update(lengthPrefix(value)); hash.update(value)
      res.keys_read++
      res.bytes_read += key.length + value.length
      if (!isUtf8(key) || !isUtf8(value)) res.non_utf8_entries++
      if (getEvery > 0 && (res.keys_read - 1) % getEvery === 0) {
        const got = await db.get(key, BINARY)
        res.gets++
        if (!Buffer.isBuffer(got) || !got.equals(value)) res.get_mismatches++
      }
      if (dump) await emit({ t: 'kv', k: key.toString('base64'), v: value.toString('base64') })
    }
  } finally {
    await endIterator(it)
  }
  res.digest = hash.digest('hex')
  return res
}

// The whole key space: keys are bytes, so [0x00, 0xff * 256] covers every key we or the node write.
function compactAll (db) {
  return new Promise((resolve, reject) => {
    db.db.db.compactRange(Buffer.from([0]), Buffer.alloc(256, 0xff), (err) => (err ? reject(err) : resolve()))
  })
}

// Writes as the node does (UTF-8 strings, one put, one batch, one delete), compacts everything the
// node can see into its own files, closes, re-opens and reads every entry again.
async function writeCheck (levelRocksdb, location, db, before) {
  const probeKey = 'bluegreen-probe\nwrite-check'
  await db.put(probeKey, 'ok ✓')
  await db.batch().put(probeKey + '\nbatch', 'x').del(probeKey + '\nbatch').write()
  await compactAll(db)
  await db.close()
  const db2 = await openDb(levelRocksdb, location)
  const readBack = await db2.get(probeKey)
  if (readBack !== 'ok ✓') throw new Error('probe key read back as ' + JSON.stringify(readBack))
  await db2.del(probeKey)
  await db2.close()
  const db3 = await openDb(levelRocksdb, location)
  const after = await readAll(db3, false, 0)
  await db3.close()
  if (after.digest !== before.digest || after.keys_read !== before.keys_read) {
    throw new Error(`after node writes + compaction: ${after.keys_read} keys (digest ${after.digest}), before: ${before.keys_read} keys (digest ${before.digest})`)
  }
  return true
}

function sqliteCall (db, method, sql, params) {
  return new Promise((resolve, reject) => db[method](sql, params || [], (err, res) => (err ? reject(err) : resolve(res))))
}

async function probeSqlite (sqlite3, file, rows) {
  const db = await new Promise((resolve, reject) => {
    const d = new sqlite3.Database(file, sqlite3.OPEN_READONLY, (err) => (err ? reject(err) : resolve(d)))
  })
  try {
    const uv = await sqliteCall(db, 'get', 'PRAGMA user_version')
    const count = await sqliteCall(db, 'get', 'SELECT COUNT(*) AS n FROM units')
    const sample = await sqliteCall(db, 'all',
      'SELECT unit, version, alt, main_chain_index, is_stable FROM units ORDER BY rowid LIMIT ?', [rows])
    return { sqlite_user_version: uv.user_version, sqlite_units: count.n, sqlite_rows: sample }
  } finally {
    await new Promise((resolve) => db.close(() => resolve()))
  }
}

const summary = { t: 'summary', node_version: process.version }

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const nodeModules = path.resolve(args.nodeModules)
  const req = createRequire(path.join(path.dirname(nodeModules), 'bluegreen-probe-anchor.js'))
  const version = (name) => { try { return req(name + '/package.json').version } catch (e) { return null } }

  if (args.kv) {
    const levelRocksdb = await stage('load', () => req('level-rocksdb'))
    summary.level_rocksdb_version = version('level-rocksdb')
    summary.rocksdb_version = version('rocksdb')
    const db = await stage('open', () => openDb(levelRocksdb, path.resolve(args.kv)))
    const read = await stage('read', () => readAll(db, args.dump, args.getEvery))
    summary.keys_read = read.keys_read
    summary.bytes_read = read.bytes_read
    summary.non_utf8_entries = read.non_utf8_entries
    summary.gets = read.gets
    summary.get_mismatches = read.get_mismatches
    summary.kv_digest = read.digest
    if (args.writeCheck) {
      summary.write_check = await stage('write', () => writeCheck(levelRocksdb, path.resolve(args.kv), db, read))
    } else {
      await stage('close', () => db.close())
    }
  }
  if (args.sqlite) {
    const sqlite3 = await stage('load', () => req('sqlite3'))
    summary.sqlite3_version = version('sqlite3')
    Object.assign(summary, await stage('sqlite', () => probeSqlite(sqlite3, path.resolve(args.sqlite), args.sqliteRows)))
  }
}

main().then(() => finish(summary, 0), (err) => {
  // What was learnt before the failure (versions, counts) rides along.
  finish({ ...summary, t: 'error', stage: err.stage || 'args', message: err.message }, 1)
})
