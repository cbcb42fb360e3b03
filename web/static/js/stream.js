// A session's event stream (Server-Sent Events). EventSource reconnects by
// itself and sends Last-Event-ID, so the server resumes after the last event
// this page saw; events are also deduplicated by id here, so a replay never
// shows anything twice. After an ended session's `exit` the server closes the
// stream, and so do we, or EventSource would reconnect for ever.
//
// A paused session has nothing live: the server replays its log and ends the
// stream. EventSource would ask again every second, so the stream goes to
// sleep instead (the log's last status says "paused"), and wake() opens it
// again, from the last event id, once the session has been resumed.
//
// Browsers allow six HTTP/1.1 connections per server, and every open stream
// holds one, so a StreamPool keeps at most a few connected: the tabs used
// most recently. A tab whose stream was let go reconnects, from its last
// event id, when it is shown again.
import { api } from './api.js';

export const EVENT_TYPES = ['status', 'user_message', 'message_delta', 'message', 'thinking_delta', 'thinking',
  'tool_call', 'tool_result', 'agent_busy', 'agent_idle', 'usage', 'exit', 'error_event', 'paused', 'resumed'];

export class SessionStream {
  // onEvent(type, data, id) gets each event once, in order. onConn(state)
  // hears "open", "reconnecting", "closed", "paused" (asleep until woken) and
  // "gone" (the session no longer exists for this user).
  constructor(id, onEvent, onConn = () => {}) {
    this.id = id;
    this.onEvent = onEvent;
    this.onConn = onConn;
    this.lastId = 0;
    this.ended = false;
    this.endSeen = false;
    this.paused = false; // the last status seen says paused
    this.asleep = false; // closed because the session is paused; wake() ends it
    this.es = null;
    this.retry = null;
  }

  get connected() { return this.es !== null; }

  connect() {
    if (this.es || this.ended || this.asleep) return;
    clearTimeout(this.retry);
    const es = new EventSource(api.streamURL(this.id, this.lastId));
    this.es = es;
    for (const type of EVENT_TYPES) es.addEventListener(type, (e) => this.handle(type, e));
    es.onopen = () => this.onConn('open');
    es.onerror = () => {
      if (this.es !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (401, 404, 5xx); EventSource gives up.
        this.es = null;
        this.check();
      } else if (this.endSeen) {
        // The log of an ended session is all here; do not ask again.
        this.ended = true;
        this.close();
      } else if (this.paused) {
        // The log of a paused session is all here, and nothing is live.
        this.close();
        this.asleep = true;
        this.onConn('paused');
      } else {
        this.onConn('reconnecting');
      }
    };
  }

  handle(type, e) {
    const id = Number(e.lastEventId);
    if (!Number.isInteger(id) || id <= this.lastId) return; // already seen
    let data;
    try { data = JSON.parse(e.data); } catch { return; }
    this.lastId = id;
    if (type === 'status') {
      if (data.state === 'stopped' || data.state === 'error') this.endSeen = true;
      this.paused = data.state === 'paused';
    }
    try {
      this.onEvent(type, data, id);
    } catch (err) {
      console.error('event', type, id, err);
    }
    if (type === 'exit') {
      this.ended = true;
      this.close();
    }
  }

  // check finds out why a stream was refused, and tries again if it may.
  async check() {
    try {
      await api.status(this.id); // a 401 goes to the login page
    } catch (err) {
      if (err.status === 404) {
        this.ended = true;
        this.onConn('gone');
        return;
      }
    }
    this.onConn('reconnecting');
    this.retry = setTimeout(() => this.connect(), 3000);
  }

  // wake lets the stream of a resumed session connect again (StreamPool.use
  // or connect does it). A connection still open is dropped: it may be the
  // one replaying the paused log, whose end would put the stream back to
  // sleep; the next one starts from the last event seen, so nothing is lost.
  wake() {
    this.close();
    this.paused = false;
    this.asleep = false;
  }

  close() {
    clearTimeout(this.retry);
    if (this.es) {
      this.es.close();
      this.es = null;
      this.onConn('closed');
    }
  }
}

export class StreamPool {
  constructor(max = 4) {
    this.max = max;
    this.recent = []; // least recently used first
  }

  // use connects s and makes it the most recent; the least recently used
  // connected streams beyond the limit are let go.
  use(s) {
    this.recent = this.recent.filter((x) => x !== s);
    this.recent.push(s);
    s.connect();
    const live = this.recent.filter((x) => x.connected);
    for (let i = 0; i < live.length - this.max; i++) live[i].close();
  }

  drop(s) {
    this.recent = this.recent.filter((x) => x !== s);
    s.close();
  }
}
