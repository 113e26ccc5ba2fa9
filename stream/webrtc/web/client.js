// worldwalk browser client: signaling over a websocket, video over WebRTC, input over a data
// channel. Plain JavaScript, no build step; works in Chromium and Firefox.
//
// URL parameters: token=<access token> (when the server requires one), watch=<session id>
// (join a running session read-only as a spectator). On a cluster (`serve --cluster`) a
// {type: "moved"} message means the session host stopped: the page reconnects by itself with
// ?resume=<walk> and the walk goes on elsewhere; {type: "queued"} says the player's place in line.
// {type: "progress"} comes every second while a first start builds the model's graphs: the status
// line says how long it has taken so far.
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  const watch = params.get('watch');
  const role = watch ? 'spectator' : 'player';

  const video = document.getElementById('video');
  const statsEl = document.getElementById('stats');
  const statusEl = document.getElementById('status');
  const statusText = document.getElementById('status-text');
  const reconnectBtn = document.getElementById('reconnect');
  const helpEl = document.getElementById('help');

  // What tests (and curious people in the console) can read.
  const ww = {
    state: 'idle',        // idle | connecting | connected | busy | ended | error
    role,
    session: null,
    walk: null,           // cluster: this player's walk (its resume token)
    moves: 0,             // cluster: times the walk moved to another session host
    codec: null,
    config: null,
    lastStats: null,
    progress: [],         // the {type: "progress"} messages received, in order
    framesShown: 0,       // requestVideoFrameCallback calls
    frames: [],           // {index, wall, width, height} when the server draws a barcode
    keyEvents: [],        // {key, down, wall}
    latency: [],          // key -> presented, step by step (ms): in, wait, plan, generate, decode,
                          // queue, out, paint, total
    rtt: null,
    pongs: 0,             // pings answered (the first eight set the clock)
    clock: null,          // {offset: server wall clock - ours in ms, rtt}
    send: (text) => sendRaw(text),   // a raw data-channel message (tests send malformed ones)
    sendBinary: (n) => sendRaw(new Uint8Array(n)),
    inboundVideo: async () => {  // the receiver's RTCInboundRtpStreamStats, for figures
      if (!pc) return null;
      let out = null;
      (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') out = s; });
      return out;
    },
  };
  window.worldwalk = ww;

  let ws = null, pc = null, dc = null;
  let helpShown = false;
  let endedByServer = false;
  let resumeWalk = null;  // cluster: the walk to continue on the next connect (after "moved")
  let pingTimer = null, pingId = 0;
  const pingSent = new Map();

  // ---- status and overlays --------------------------------------------------------------------

  function setStatus(state, text, {busy = false, reconnect = false} = {}) {
    ww.state = state;
    statusText.textContent = text;
    statusEl.classList.toggle('busy', busy);
    statusEl.hidden = !text;
    reconnectBtn.hidden = !reconnect;
    if (reconnect) toggleHelp(false);  // nothing may cover the Reconnect button
  }

  function toggleHelp(show) {
    helpEl.hidden = show === undefined ? !helpEl.hidden : !show;
  }

  document.getElementById('help-role').textContent = watch
    ? `Watching session ${watch} (read-only).`
    : 'Click the picture to walk; your keys and mouse steer the camera.';
  document.getElementById('help-button').onclick = () => toggleHelp();
  document.getElementById('help-close').onclick = () => toggleHelp(false);
  document.getElementById('reconnect-button').onclick = () => reconnect();
  reconnectBtn.onclick = () => reconnect();

  // ---- signaling and the peer connection --------------------------------------------------------

  function connect() {
    endedByServer = false;
    setStatus('connecting', 'Connecting…');
    const q = new URLSearchParams();
    if (token) q.set('token', token);
    if (watch) q.set('watch', watch);
    if (resumeWalk) q.set('resume', resumeWalk);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const sock = new WebSocket(`${proto}//${location.host}/ws?${q}`);
    ws = sock;
    // a replaced socket (Reconnect) may still deliver events: only the current one counts
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      onSignal(JSON.parse(ev.data)).catch((e) => {
        setStatus('error', `Connection failed: ${e}`, {reconnect: true});
      });
    };
    sock.onclose = (ev) => {
      if (sock !== ws || endedByServer) return;
      if (ww.state === 'connecting' && ev.code === 1006) {
        setStatus('error', 'The server refused the connection (a missing or wrong token?).',
                  {reconnect: true});
      } else {
        setStatus('ended', 'Disconnected from the server.', {reconnect: true});
      }
      teardown();
    };
  }

  async function onSignal(msg) {
    if (msg.type === 'config') {
      ww.config = msg;
      await offer(msg);
    } else if (msg.type === 'answer') {
      ww.session = msg.session;
      if (msg.walk) ww.walk = msg.walk;
      resumeWalk = null;
      ww.codec = msg.codec;
      await pc.setRemoteDescription({type: 'answer', sdp: msg.sdp});
      document.getElementById('watch-link').textContent =
        `${location.origin}${location.pathname}?watch=${msg.session}` + (token ? `&token=${token}` : '');
    } else if (msg.type === 'progress') {
      ww.progress.push(msg);
      if (ww.state === 'connecting') setStatus('connecting', msg.message || 'Preparing the world…');
    } else if (msg.type === 'queued') {
      setStatus('connecting', msg.message || `Waiting for a free GPU (${msg.ahead} ahead)…`);
    } else if (msg.type === 'moved') {
      ww.moves += 1;
      resumeWalk = msg.walk;
      reconnect();
      setStatus('connecting', 'The session host stopped; carrying on elsewhere…');
    } else if (msg.type === 'busy') {
      endedByServer = true;
      setStatus('busy', msg.message || 'The server is busy. Try again later.', {busy: true, reconnect: true});
    } else if (msg.type === 'error') {
      endedByServer = true;
      setStatus('error', msg.message || msg.code, {reconnect: true});
    } else if (msg.type === 'ended') {
      if (ww.state === 'busy' || ww.state === 'error') return;  // already said why
      endedByServer = true;
      const why = {
        idle: 'The session ended after a while without input.',
        shutdown: 'The server shut down.',
        session_closed: 'The session you were watching ended.',
      }[msg.reason] || `The session ended (${msg.reason}).`;
      setStatus('ended', why, {reconnect: true});
      teardown();
    }
  }

  async function offer(config) {
    const conn = new RTCPeerConnection({iceServers: config.iceServers || []});
    pc = conn;
    conn.addTransceiver('video', {direction: 'recvonly'});
    conn.ontrack = (ev) => {
      // an interactive stream: play each frame as soon as it is decoded
      if ('jitterBufferTarget' in ev.receiver) ev.receiver.jitterBufferTarget = 0;
      else if ('playoutDelayHint' in ev.receiver) ev.receiver.playoutDelayHint = 0;
      video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      video.play().catch(() => {});
    };
    conn.onconnectionstatechange = () => {
      if (conn !== pc) return;
      if (conn.connectionState === 'connected') {
        setStatus('connected', '');
        if (role === 'player' && !helpShown) toggleHelp(true);  // once, until the first click
        helpShown = true;
      } else if (conn.connectionState === 'failed') {
        setStatus('error', 'The video connection failed.', {reconnect: true});
      }
    };
    dc = conn.createDataChannel('input', {ordered: true});
    dc.onopen = () => {
      // the clock offset is read from the ping with the shortest round trip: take eight in the
      // first two seconds, then one every two
      pingTimer = setInterval(ping, 2000);
      for (let i = 0; i < 8; i++) setTimeout(ping, 250 * i);
    };
    dc.onmessage = (ev) => onChannel(ev.data);

    await conn.setLocalDescription(await conn.createOffer());
    // the server (aiortc) does not trickle ICE: send the offer with every candidate in it
    await new Promise((resolve) => {
      if (conn.iceGatheringState === 'complete') return resolve();
      const done = () => {
        if (conn.iceGatheringState === 'complete') {
          conn.removeEventListener('icegatheringstatechange', done);
          resolve();
        }
      };
      conn.addEventListener('icegatheringstatechange', done);
      setTimeout(resolve, 5000);
    });
    if (conn !== pc) return;  // torn down while gathering
    ws.send(JSON.stringify({type: 'offer', sdp: conn.localDescription.sdp}));
  }

  function teardown() {
    clearInterval(pingTimer);
    pingTimer = null;
    if (dc) dc.close();
    if (pc) pc.close();
    dc = pc = null;
    if (document.pointerLockElement) document.exitPointerLock();
  }

  function reconnect() {
    endedByServer = true;  // the old socket's close is ours, not news
    teardown();
    if (ws) ws.close();
    ww.session = null;
    connect();
  }

  // ---- the data channel ---------------------------------------------------------------------

  function sendRaw(text) {
    if (dc && dc.readyState === 'open') {
      dc.send(text);
      return true;
    }
    return false;
  }

  let inputSeq = 0;

  function send(obj) {
    if (role !== 'player' && obj.t !== 'ping') return false;
    obj.ts = performance.timeOrigin + performance.now();
    obj.n = ++inputSeq;  // the server's pose messages say which of these they include
    if (obj.t === 'mouse') warp.sentMouse.push({n: obj.n, dx: obj.dx, dy: obj.dy});
    else if (obj.t === 'key' || obj.t === 'pad' || obj.t === 'blur') warp.sentHeld.push({n: obj.n, at: performance.now()});
    return sendRaw(JSON.stringify(obj));
  }

  function ping() {
    pingId += 1;
    pingSent.set(pingId, performance.now());
    send({t: 'ping', id: pingId});
  }

  function onChannel(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (msg.t === 'pong' && pingSent.has(msg.id)) {
      const sent = pingSent.get(msg.id), now = performance.now();
      ww.rtt = now - sent;
      ww.pongs += 1;
      pingSent.delete(msg.id);
      // server clock minus ours (ms), from the ping with the shortest round trip
      if (ww.clock === null || ww.rtt < ww.clock.rtt) {
        ww.clock = {rtt: ww.rtt,
                    offset: 1000 * msg.server_time - (performance.timeOrigin + (sent + now) / 2)};
      }
    } else if (msg.t === 'pose') {
      onPose(msg);
    } else if (msg.t === 'stats') {
      ww.lastStats = msg;
      showStats(msg);
    }
  }

  let showStatsPanel = true;

  function showStats(s) {
    if (!showStatsPanel) return;
    const p = s.position || [0, 0, 0];
    const lines = [
      `${role}  ${s.session || ''}  ${s.codec || ''}  ${video.videoWidth}x${video.videoHeight}`,
      `server ${s.fps ?? '-'} fps  gen ${(s.gen_fps ?? 0).toFixed(1)} fps  chunk ${(s.chunk_ms ?? 0).toFixed(0)} ms`,
      `frame ${s.frame}  pos ${p.map((v) => v.toFixed(2)).join(' ')}${s.paused ? '  PAUSED' : ''}`,
      `rtt ${ww.rtt === null ? '-' : ww.rtt.toFixed(1)} ms  input dropped ${s.input ? s.input.dropped : 0}`,
    ];
    const lat = latencyText();
    if (lat) lines.push(lat);
    if (s.error) lines.push(`error: ${s.error}`);
    if (s.backends) lines.push(s.backends);
    if (s.recording && s.recording.startsWith('not recording')) lines.push(s.recording);
    statsEl.textContent = lines.join('\n');
  }

  // ---- video frames -----------------------------------------------------------------------

  const band = document.createElement('canvas');
  const bandCtx = band.getContext('2d', {willReadFrequently: true});
  const CELLS = 32, INDEX_BITS = 24, GUARD = [1, 0, 1, 0];

  // The frame number the server drew along the top rows (see video_track.stamp_barcode).
  function readBarcode(w, h) {
    const cell = Math.max(1, Math.floor(w / CELLS)), bandH = Math.max(4, Math.floor(h / 18));
    if (band.width !== w) band.width = w;
    band.height = bandH;
    bandCtx.drawImage(video, 0, 0, w, bandH, 0, 0, w, bandH);
    const row = bandCtx.getImageData(0, bandH >> 1, w, 1).data;
    const bits = [];
    for (let i = 0; i < CELLS; i++) {
      const x = i * cell + (cell >> 1);
      const v = (row[4 * x] + row[4 * x + 1] + row[4 * x + 2]) / 3;
      bits.push(v > 127 ? 1 : 0);
    }
    for (let i = 0; i < 4; i++) if (bits[i] !== GUARD[i]) return null;
    let value = 0;
    for (let i = 4; i < 4 + INDEX_BITS; i++) value = value * 2 + bits[i];
    let check = 0;
    for (let i = 0; i < INDEX_BITS; i += 4) check ^= Math.floor(value / 2 ** i) & 0xf;
    for (let i = 0; i < 4; i++) if (bits[28 + i] !== ((check >> (3 - i)) & 1)) return null;
    return value;
  }

  function onVideoFrame(now, meta) {
    ww.framesShown += 1;
    warp.newFrame = true;
    matchPose(meta.receiveTime !== undefined ? meta.receiveTime : now);
    if (ww.config && ww.config.barcode) {
      const index = readBarcode(meta.width, meta.height);
      if (index !== null) {
        ww.frames.push({
          index, wall: performance.timeOrigin + now, width: meta.width, height: meta.height,
          // WebRTC sources: when the frame's last packet arrived (Chromium)
          received: meta.receiveTime ? performance.timeOrigin + meta.receiveTime : null,
        });
        if (ww.frames.length > 4000) ww.frames.splice(0, 1000);
        matchPose(0, index);
      }
    }
    keyLatency(now, meta);
    video.requestVideoFrameCallback(onVideoFrame);
  }

  // Key -> presented, step by step: the server's part comes with the pose of the frame that
  // answers a press ("lat", "rt"); the page adds the key message's way in (half the ping round
  // trip), the frame's encode and way out (released -> its last packet here) and the page's
  // decode and paint (last packet -> presented). A busy machine may deliver that pose after its
  // frame, or two poses between two frames: the press is then timed at the first frame presented
  // at or after its own.
  function keyLatency(now, meta) {
    const shown = warp.shown;
    if (!shown) return;
    for (const p of warp.poses) {
      if (p.lat && !p.latDone && p.i <= shown.i) {
        p.latDone = true;
        if (ww.clock) recordLatency(p, now, meta);  // a press before the first pong is not timed
      }
    }
  }

  function recordLatency(p, now, meta) {
    const toServer = (t) => performance.timeOrigin + t + ww.clock.offset;  // ms, server wall clock
    const received = meta.receiveTime !== undefined ? meta.receiveTime : now;
    const split = Object.assign({in: ww.clock.rtt / 2}, p.lat, {
      out: toServer(received) - 1000 * p.rt,
      paint: now - received,
    });
    split.total = Object.values(split).reduce((a, b) => a + b, 0);
    ww.latency.push(split);
    if (ww.latency.length > 256) ww.latency.shift();
  }

  function latencyText() {
    if (!ww.latency.length) return null;
    const median = (k) => {
      const v = ww.latency.map((s) => s[k]).sort((a, b) => a - b);
      return Math.round(v[v.length >> 1]);
    };
    return `key ${median('total')} ms: in ${median('in')} + wait ${median('wait')} + plan ${median('plan')}` +
      ` + gen ${median('generate')} + dec ${median('decode')} + queue ${median('queue')}` +
      ` + out ${median('out')} + paint ${median('paint')}`;
  }

  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback(onVideoFrame);
  }

  // ---- timewarp -------------------------------------------------------------------------------
  // The server sends each frame's camera rotation with the frames ({t: "pose"}, see
  // stream/webrtc/pose_channel.py): the rotation the frame was made at (f), the one the player held when
  // it was sent (h) with the turn rate held then (w), and the number of the newest input message it
  // had applied (n). The page draws the video through a WebGL canvas, turned from the frame's
  // rotation to the one the player holds now: h, plus the turn rate since the message came, plus
  // the mouse motion sent after message n. Turning answers at once; the frames catch up.
  // ?timewarp=0 shows the video as it comes.

  const warp = {
    on: params.get('timewarp') !== '0',
    poses: [],        // recent pose messages, with their arrival time
    shown: null,      // the pose of the frame on screen
    latest: null,     // the newest pose message
    sentMouse: [],    // {n, dx, dy} mouse messages the server may not have applied yet
    sentHeld: [],     // {n, at}: key and pad messages, likewise (they end the held turn rate)
    newFrame: false,
    drawn: '',        // what the canvas shows (frame, size, view): unchanged, no redraw
    gl: null,
  };
  ww.timewarp = {on: warp.on, active: false, poses: 0, view: null, frame: null};

  function onPose(msg) {
    if (msg.warp === false && warp.on) {  // a world steered by actions: no camera to turn its frames by
      warp.on = ww.timewarp.on = false;
      if (warp.gl) warp.gl.canvas.hidden = true;
    }
    msg.arrival = performance.now();
    warp.latest = msg;
    warp.poses.push(msg);
    if (warp.poses.length > 64) warp.poses.shift();
    warp.sentMouse = warp.sentMouse.filter((m) => m.n > msg.n);
    warp.sentHeld = warp.sentHeld.filter((m) => m.n > msg.n);
    ww.timewarp.poses += 1;
    if (!warp.shown) warp.shown = msg;
  }

  // The pose of the frame the video shows: by its barcode when the server draws one, else the
  // newest pose that came before the frame did (the pose is sent as the frame is).
  function matchPose(frameArrival, index = null) {
    let best = null;
    for (const p of warp.poses) {
      if (index !== null ? p.i === index : p.arrival <= frameArrival + 8) best = p;
    }
    if (best) warp.shown = best;
  }

  function rotation(yaw, pitch, roll) {  // R = Ry(yaw) Rx(pitch) Rz(roll), row-major 3x3
    const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
    const cr = Math.cos(roll), sr = Math.sin(roll);
    const ry = [cy, 0, sy, 0, 1, 0, -sy, 0, cy];
    const rx = [1, 0, 0, 0, cp, -sp, 0, sp, cp];
    const rz = [cr, -sr, 0, sr, cr, 0, 0, 0, 1];
    return mul(mul(ry, rx), rz);
  }

  function mul(a, b) {
    const out = new Array(9).fill(0);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) out[3 * i + j] += a[3 * i + k] * b[3 * k + j];
    return out;
  }

  function transpose(a) { return [a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8]]; }

  // The rotation the player holds now (yaw, pitch, roll).
  function heldRotation() {
    const p = warp.latest;
    // the turn rate held when the pose was sent goes on until the page changed what it holds
    // (the next pose says what that does), and for a quarter second at most with no news
    const until = warp.sentHeld.length ? Math.min(performance.now(), warp.sentHeld[0].at) : performance.now();
    const dt = Math.max(0, Math.min(0.25, (until - p.arrival) / 1000));
    let dx = mouseDx, dy = mouseDy;
    for (const m of warp.sentMouse) { dx += m.dx; dy += m.dy; }
    const limit = p.pl;
    const pitch = Math.max(-limit, Math.min(limit, p.h[1] + p.w[1] * dt + p.m[1] * dy));
    return [p.h[0] + p.w[0] * dt + p.m[0] * dx, pitch, p.h[2]];
  }

  const VERTEX = `attribute vec2 pos; varying vec2 uv;
    void main() { uv = vec2(0.5 * (pos.x + 1.0), 0.5 * (1.0 - pos.y)); gl_Position = vec4(pos, 0.0, 1.0); }`;
  // uv: the view's pixel as a fraction of the picture (x right, y down); H maps it into the frame.
  const FRAGMENT = `precision mediump float; varying vec2 uv; uniform mat3 H; uniform sampler2D tex;
    void main() {
      vec3 p = H * vec3(uv, 1.0);
      vec2 q = p.xy / p.z;
      if (p.z <= 0.0 || q.x < 0.0 || q.x > 1.0 || q.y < 0.0 || q.y > 1.0) { gl_FragColor = vec4(0.0, 0.0, 0.0, 1.0); return; }
      gl_FragColor = vec4(texture2D(tex, q).rgb, 1.0);
    }`;

  function setupWarp() {
    const canvas = document.createElement('canvas');
    canvas.id = 'warp';
    canvas.hidden = true;
    document.body.insertBefore(canvas, video.nextSibling);
    const gl = canvas.getContext('webgl', {antialias: false, alpha: false});
    if (!gl) return null;
    const shader = (type, src) => { const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s; };
    const prog = gl.createProgram();
    gl.attachShader(prog, shader(gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) return null;
    gl.useProgram(prog);
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const loc = gl.getAttribLocation(prog, 'pos');
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
    const tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, tex);
    for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.LINEAR], [gl.TEXTURE_MAG_FILTER, gl.LINEAR],
      [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]]) gl.texParameteri(gl.TEXTURE_2D, k, v);
    return {canvas, gl, H: gl.getUniformLocation(prog, 'H'), uploaded: false};
  }

  function drawWarp() {
    if (!warp.on || !warp.latest || !warp.shown || !video.videoWidth) return;
    if (!warp.gl) {
      warp.gl = setupWarp();
      if (!warp.gl) { warp.on = ww.timewarp.on = false; return; }
    }
    const {canvas, gl} = warp.gl;
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.round(canvas.clientWidth * dpr) || 1, ch = Math.round(canvas.clientHeight * dpr) || 1;
    if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
    const f = warp.shown, view = heldRotation();
    // redraw only when something on screen changes: a new frame, a turn, a resize
    const state = [f.i, cw, ch, ...view.map((v) => v.toFixed(5))].join();
    if (!warp.newFrame && warp.gl.uploaded && state === warp.drawn) return;
    warp.drawn = state;
    if (warp.newFrame || !warp.gl.uploaded) {
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, video);
      warp.gl.uploaded = true;
      warp.newFrame = false;
    }
    // H = K R_frame^T R_view K^-1, with K in fractions of the picture (stream/webrtc/pose_channel.py "k")
    const [fx, fy, cx, cy] = f.k;
    const K = [fx, 0, cx, 0, fy, cy, 0, 0, 1];
    const Kinv = [1 / fx, 0, -cx / fx, 0, 1 / fy, -cy / fy, 0, 0, 1];
    const R = mul(transpose(rotation(f.f[0], f.f[1], f.f[2])), rotation(view[0], view[1], view[2]));
    const H = mul(mul(K, R), Kinv);
    // letterbox the picture as the video element does (object-fit: contain)
    const scale = Math.min(cw / video.videoWidth, ch / video.videoHeight);
    const w = Math.round(video.videoWidth * scale), h = Math.round(video.videoHeight * scale);
    gl.viewport(0, 0, cw, ch);
    gl.clearColor(0, 0, 0, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.viewport((cw - w) >> 1, (ch - h) >> 1, w, h);
    gl.uniformMatrix3fv(warp.gl.H, false, new Float32Array(transpose(H)));  // GLSL wants columns
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    canvas.hidden = false;
    ww.timewarp.active = true;
    ww.timewarp.view = view;
    ww.timewarp.frame = f.f;
  }

  // ---- keyboard, mouse, gamepad -------------------------------------------------------------

  // KeyboardEvent.code -> the key names of controls.InputState (physical keys: WASD anywhere)
  function keyName(code) {
    if (/^Key[A-Z]$/.test(code)) return code.slice(3).toLowerCase();
    if (/^Digit[0-9]$/.test(code)) return code.slice(5);
    return {
      ShiftLeft: 'shift', ShiftRight: 'shift', ControlLeft: 'ctrl', ControlRight: 'ctrl',
      AltLeft: 'alt', AltRight: 'alt', Space: 'space', Tab: 'tab', Enter: 'enter',
      ArrowLeft: 'left', ArrowRight: 'right', ArrowUp: 'up', ArrowDown: 'down',
      PageUp: 'pageup', PageDown: 'pagedown', Home: 'home', End: 'end',
    }[code] || null;
  }

  const COMMAND_KEYS = {KeyP: 'pause', KeyR: 'reset', Backspace: 'rewind'};
  const held = new Set();
  let paused = false;

  function command(cmd) {
    if (cmd === 'pause') {
      paused = !paused;
      cmd = paused ? 'pause' : 'resume';
    }
    send({t: 'cmd', cmd});
  }

  window.addEventListener('keydown', (e) => {
    if (e.code === 'KeyH' || e.code === 'F1' || e.key === '?') { toggleHelp(); e.preventDefault(); return; }
    if (e.code === 'F2') { showStatsPanel = !showStatsPanel; statsEl.hidden = !showStatsPanel; e.preventDefault(); return; }
    if (role !== 'player' || e.ctrlKey || e.metaKey) return;
    if (COMMAND_KEYS[e.code]) {
      if (!e.repeat) command(COMMAND_KEYS[e.code]);
      e.preventDefault();
      return;
    }
    const name = keyName(e.code);
    if (!name) return;
    e.preventDefault();
    if (e.repeat || held.has(name)) return;
    held.add(name);
    ww.keyEvents.push({key: name, down: true, wall: performance.timeOrigin + e.timeStamp});
    send({t: 'key', key: name, down: true});
  });

  window.addEventListener('keyup', (e) => {
    const name = keyName(e.code);
    if (!name || !held.has(name)) return;
    held.delete(name);
    ww.keyEvents.push({key: name, down: false, wall: performance.timeOrigin + e.timeStamp});
    send({t: 'key', key: name, down: false});
  });

  function releaseAll() {
    held.clear();
    send({t: 'blur'});
  }
  window.addEventListener('blur', releaseAll);
  document.addEventListener('visibilitychange', () => { if (document.hidden) releaseAll(); });

  // A click anywhere on the picture starts the walk: it closes the help (a click on the help panel
  // itself too) and captures the mouse. Buttons keep their own clicks.
  document.addEventListener('click', (e) => {
    if (e.target.closest && e.target.closest('button, a, #toolbar')) return;
    toggleHelp(false);
    if (role === 'player' && !document.pointerLockElement && video.requestPointerLock) {
      const p = video.requestPointerLock();
      if (p && p.catch) p.catch(() => {});
    }
  });

  let mouseDx = 0, mouseDy = 0;
  document.addEventListener('mousemove', (e) => {
    if (document.pointerLockElement !== video) return;
    mouseDx += e.movementX;
    mouseDy += e.movementY;
  });

  // Gamepad API (standard mapping): sticks and triggers every frame they change.
  let lastPad = '', lastButtons = [];
  const PAD_COMMANDS = {9: 'pause', 8: 'reset', 1: 'rewind'};  // Start, Back, B

  function pollGamepad() {
    const pads = navigator.getGamepads ? navigator.getGamepads() : [];
    const pad = Array.from(pads).find((p) => p && p.connected);
    if (!pad) return;
    const axis = (i) => Math.max(-1, Math.min(1, pad.axes[i] || 0));
    const button = (i) => (pad.buttons[i] ? pad.buttons[i].value : 0);
    const r = (v) => Math.round(v * 100) / 100;
    const state = {
      t: 'pad', ls: [r(axis(0)), r(axis(1))], rs: [r(axis(2)), r(axis(3))],
      lt: r(button(6)), rt: r(button(7)),
    };
    const key = JSON.stringify(state);
    if (key !== lastPad) {
      lastPad = key;
      send(state);
    }
    const pressed = pad.buttons.map((b) => b.pressed);
    for (const [i, cmd] of Object.entries(PAD_COMMANDS)) {
      if (pressed[i] && !lastButtons[i]) command(cmd);
    }
    lastButtons = pressed;
  }

  // Mouse motion is summed and sent once per display frame, not once per event.
  function tick() {
    if (mouseDx || mouseDy) {
      send({t: 'mouse', dx: mouseDx, dy: mouseDy});
      mouseDx = mouseDy = 0;
    }
    if (role === 'player') pollGamepad();
    drawWarp();
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);

  connect();
})();
