// The API key: asked for once, kept in this browser's localStorage, sent on every call.
// HTTP calls carry it as "Authorization: Bearer <key>"; a browser cannot set headers on a
// WebSocket, so sockets offer it as the subprotocol "bearer.<key>", which the gateway
// accepts (it keeps the key out of URLs and their logs).

import { wsUrl } from "./dom.js";

const STORAGE_KEY = "oee.apiKey";

export function apiKey() {
  return localStorage.getItem(STORAGE_KEY) ?? "";
}

export function saveKey(key) {
  localStorage.setItem(STORAGE_KEY, key);
}

export function forgetKey() {
  localStorage.removeItem(STORAGE_KEY);
}

/** fetch() with the key; a 401 (the key is no longer known) forgets it and asks again. */
export async function api(path, options = {}) {
  const headers = new Headers(options.headers ?? {});
  headers.set("authorization", `Bearer ${apiKey()}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && apiKey()) {
    forgetKey();
    location.reload();
  }
  return response;
}

/** Open a WebSocket on a path of this host, with the key as its subprotocol. */
export function openSocket(path) {
  return new WebSocket(wsUrl(path), [`bearer.${apiKey()}`]);
}

/** Tell whether a key may be offered as a subprotocol (token characters only). */
export function wellFormed(key) {
  return /^[A-Za-z0-9_.~-]{8,256}$/.test(key);
}
