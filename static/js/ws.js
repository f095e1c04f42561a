// ComfyGate's WebSocket, reconnected with exponential backoff whenever it drops.

import { parseJSON, wsUrl } from './api.js';

export class LiveSocket {
  constructor({ onMessage, onState, minDelay = 500, maxDelay = 10000 }) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.failures = 0;
    this.ws = null;
    this.timer = null;
    this.everOpened = false;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.onState('connecting');
    ws.addEventListener('open', () => {
      const reconnected = this.everOpened;
      this.everOpened = true;
      this.failures = 0;
      this.onState('open', { reconnected });
    });
    ws.addEventListener('message', (event) => {
      let message;
      try { message = parseJSON(event.data); } catch { return; }
      if (message && typeof message === 'object') this.onMessage(message);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.retry(event.code);
    });
  }

  retry(code) {
    this.failures += 1;
    const base = Math.min(this.maxDelay, this.minDelay * 2 ** (this.failures - 1));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.onState('closed', { delay, code, failures: this.failures });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Drop the connection now and open a new one (after the API key changed). */
  reconnect() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
    this.failures = 0;
    this.connect();
  }

  send(message) {
    if (this.open) this.ws.send(JSON.stringify(message));
  }
}
