// Shop-floor board: loads GET /board/state, then listens to GET /board/events (server-sent
// events, one `snapshot` per refresh). Data is written with textContent only, never as HTML.
(function () {
  'use strict';

  var params = new URLSearchParams(window.location.search);
  var site = params.get('site');
  var query = site ? '?site=' + encodeURIComponent(site) : '';
  var STALE_AFTER_MS = 15000; // no newer snapshot for this long: data is stale
  var SILENT_RECONNECT_MS = 20000; // no event at all for this long: reopen the stream
  var POLL_MS = 5000; // while the stream is down, poll /board/state this often
  var READING_STALE_S = 120;

  var snapshot = null;
  var clockOffsetMs = 0; // server time - local time, from the newest snapshot
  var freshAt = 0; // local time a newer snapshot last arrived
  var messageAt = 0; // local time anything last arrived on the stream
  var lastPollAt = 0;
  var source = null;
  var reconnectTimer = null;
  var reconnectDelayMs = 1000;
  var lines = new Map();
  var cards = new Map();

  var $ = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setText(e, text) {
    if (e.textContent !== text) e.textContent = text;
  }

  function serverNow() { return Date.now() + clockOffsetMs; }

  function pct(x) { return x === null || x === undefined ? '\u2014' : (x * 100).toFixed(1) + '%'; }

  function band(x) {
    if (x === null || x === undefined) return 'none';
    if (x >= 0.85) return 'good';
    if (x >= 0.6) return 'fair';
    return 'poor';
  }

  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h + ':' + String(m).padStart(2, '0') + ':' + String(r).padStart(2, '0');
  }

  function age(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm';
    if (s < 86400) return Math.floor(s / 3600) + 'h';
    return Math.floor(s / 86400) + 'd';
  }

  function reasonText(r) { return r ? r.replace(/_/g, ' ') : ''; }

  function zoneOf(siteId) {
    if (!snapshot) return undefined;
    for (var i = 0; i < snapshot.sites.length; i++) {
      if (snapshot.sites[i].site_id === siteId) return snapshot.sites[i].time_zone;
    }
    return undefined;
  }

  function timeIn(date, zone, seconds) {
    var opts = { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
    if (seconds) opts.second = '2-digit';
    try {
      if (zone) opts.timeZone = zone;
      return new Intl.DateTimeFormat('en-GB', opts).format(date);
    } catch (e) {
      delete opts.timeZone;
      return new Intl.DateTimeFormat('en-GB', opts).format(date);
    }
  }

  function formatValue(v) {
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 0.01)) return v.toExponential(2);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 100) return v.toFixed(1);
    return String(Math.round(v * 100) / 100);
  }

  // ---- header ---------------------------------------------------------------------------

  function renderHeader() {
    var sites = snapshot.sites;
    var siteText = site ? site : sites.length === 1 ? sites[0].site_id : 'All sites';
    if (sites.length === 1 && sites[0].name && sites[0].name !== sites[0].site_id) {
      siteText += ' \u00b7 ' + sites[0].name;
    }
    setText($('site'), siteText);
    var shift = $('shift');
    shift.textContent = '';
    sites.forEach(function (s, i) {
      if (i > 0) shift.appendChild(document.createTextNode('   '));
      if (sites.length > 1) shift.appendChild(document.createTextNode(s.site_id + ' '));
      if (!s.shift) {
        shift.appendChild(document.createTextNode('no shift'));
        return;
      }
      shift.appendChild(el('b', null, s.shift.shift_name + ' shift'));
      shift.appendChild(document.createTextNode(' ' +
        timeIn(new Date(s.shift.starts_at), s.time_zone) + '\u2013' +
        timeIn(new Date(s.shift.ends_at), s.time_zone)));
    });
  }

  function tickClock() {
    var zone = snapshot && snapshot.sites.length === 1 ? snapshot.sites[0].time_zone : undefined;
    setText($('clock'), timeIn(new Date(serverNow()), zone, true));
  }

  // ---- cards ----------------------------------------------------------------------------

  function lineSection(lineId) {
    var key = lineId === null || lineId === undefined ? '' : lineId;
    var section = lines.get(key);
    if (!section) {
      section = el('section', 'line');
      section.dataset.line = key;
      section.appendChild(el('h2', null, key ? 'Line ' + key : 'Resources without a line'));
      section.grid = section.appendChild(el('div', 'grid'));
      lines.set(key, section);
    }
    return section;
  }

  function factorRow(k) {
    var row = el('div', 'factor');
    row.appendChild(el('span', 'k', k));
    var bar = row.appendChild(el('div', 'bar'));
    row.fill = bar.appendChild(el('div', 'fill'));
    row.value = row.appendChild(el('span', 'v', '\u2014'));
    return row;
  }

  function makeCard(id) {
    var c = el('article', 'card');
    c.dataset.resource = id;
    var head = c.appendChild(el('div', 'card-head'));
    var title = head.appendChild(el('div', 'title'));
    title.appendChild(el('h3', null, id));
    c.nameEl = title.appendChild(el('span', 'name'));
    c.badge = head.appendChild(el('span', 'badge', 'IDLE'));
    c.badge.dataset.field = 'state';

    var run = c.appendChild(el('div', 'run'));
    c.wo = run.appendChild(el('span', 'wo'));
    c.wo.dataset.field = 'work-order';
    c.elapsed = run.appendChild(el('span', 'elapsed'));
    c.elapsed.dataset.field = 'elapsed';
    c.since = run.appendChild(el('span', 'label'));
    c.started = run.appendChild(el('span', 'started'));

    var counts = c.appendChild(el('div', 'counts'));
    var good = counts.appendChild(el('div', 'count good'));
    good.appendChild(el('span', 'label', 'GOOD'));
    c.good = good.appendChild(el('span', 'num', '\u2014'));
    c.good.dataset.field = 'good';
    var scrap = counts.appendChild(el('div', 'count scrap'));
    scrap.appendChild(el('span', 'label', 'SCRAP'));
    c.scrap = scrap.appendChild(el('span', 'num', '\u2014'));
    c.scrap.dataset.field = 'scrap';

    c.oee = c.appendChild(el('div', 'oee'));
    var main = c.oee.appendChild(el('div', 'main'));
    c.oeeLabel = main.appendChild(el('span', 'label', 'OEE'));
    c.oeeValue = main.appendChild(el('span', 'value', '\u2014'));
    c.oeeValue.dataset.field = 'oee';
    c.oeeReason = main.appendChild(el('span', 'reason'));
    var factors = c.oee.appendChild(el('div', 'factors'));
    c.fA = factors.appendChild(factorRow('A'));
    c.fP = factors.appendChild(factorRow('P'));
    c.fQ = factors.appendChild(factorRow('Q'));
    c.shiftCounts = c.oee.appendChild(el('div', 'shift-counts'));

    c.readings = c.appendChild(el('ul', 'readings'));
    return c;
  }

  function setCount(e, n) {
    var text = n === null ? '\u2014' : Number(n).toLocaleString('en-US');
    if (e.textContent === text) return;
    var changed = e.dataset.value !== undefined && n !== null;
    e.textContent = text;
    e.dataset.value = n === null ? '' : String(n);
    if (changed) {
      e.classList.remove('flash');
      void e.offsetWidth; // restart the animation
      e.classList.add('flash');
    }
  }

  function setFactor(row, x) {
    row.dataset.band = band(x);
    row.fill.style.width = x === null || x === undefined ? '0' : Math.min(100, x * 100).toFixed(1) + '%';
    setText(row.value, pct(x));
  }

  function updateCard(c, r) {
    c.dataset.state = r.state;
    // A stop detected from the machine's own readings, while the run is not paused.
    c.dataset.stopped = String(!!r.machine_stop && r.state === 'running');
    c.snapshotResource = r;
    setText(c.nameEl, r.name && r.name !== r.resource_id ? r.name : '');
    var run = r.run;
    var zone = zoneOf(r.site_id);
    setText(c.badge, r.state.toUpperCase());
    if (run) {
      setText(c.wo, run.work_order_id + ' \u00b7 ' + run.operation_id);
      if (r.state === 'paused') {
        // How long it has been down, ticking in tickCard; the start time is in the tooltip.
        c.since.title = run.paused_since ? 'since ' + timeIn(new Date(run.paused_since), zone) : '';
      } else {
        setText(c.since, run.planned_seconds ? 'planned ' + duration(run.planned_seconds) : '');
        c.since.title = '';
      }
      setText(c.started, 'started ' + timeIn(new Date(run.started_at), zone));
      setCount(c.good, run.good_units);
      setCount(c.scrap, run.scrap_units);
    } else {
      setText(c.wo, 'No active run');
      setText(c.since, '');
      setText(c.started, '');
      setText(c.elapsed, '');
      setCount(c.good, null);
      setCount(c.scrap, null);
    }

    var k = r.oee;
    c.oee.dataset.band = band(k ? k.oee : null);
    setText(c.oeeLabel, k ? 'OEE \u00b7 ' + k.shift_name.toUpperCase() : 'OEE');
    setText(c.oeeValue, pct(k ? k.oee : null));
    setText(c.oeeReason, k ? reasonText(k.oee_null_reason) : 'nothing run this shift');
    setFactor(c.fA, k ? k.availability : null);
    setFactor(c.fP, k ? k.performance : null);
    setFactor(c.fQ, k ? k.quality : null);
    setText(c.shiftCounts, k
      ? 'Shift: ' + k.gq.toLocaleString('en-US') + ' good \u00b7 ' +
        (k.pq - k.gq).toLocaleString('en-US') + ' scrap' + (k.performance_over_100 ? ' \u00b7 P > 100 %: check cycle time' : '')
      : '');

    c.readings.textContent = '';
    c.readingAges = [];
    if (r.readings.length === 0) {
      c.readings.appendChild(el('li', 'none', 'no recent readings'));
    }
    r.readings.forEach(function (x) {
      var li = c.readings.appendChild(el('li'));
      li.dataset.sensor = x.sensor;
      li.appendChild(el('span', 'sensor', x.sensor));
      li.appendChild(el('span', 'val', formatValue(x.value)));
      if (x.unit) li.appendChild(el('span', 'unit', x.unit));
      var a = li.appendChild(el('span', 'age'));
      c.readingAges.push({ li: li, age: a, ts: Date.parse(x.ts) });
    });
    tickCard(c);
  }

  function tickCard(c) {
    var r = c.snapshotResource;
    var now = serverNow();
    if (r && r.run) {
      setText(c.elapsed, duration((now - Date.parse(r.run.started_at)) / 1000));
      if (r.state === 'paused') {
        setText(c.since, (reasonText(r.run.pause_reason) || 'paused') +
          (r.run.paused_since ? ' \u00b7 ' + age((now - Date.parse(r.run.paused_since)) / 1000) : ''));
      } else if (r.machine_stop) {
        setText(c.since, 'machine stopped \u00b7 ' + reasonText(r.machine_stop.reason_code) +
          ' \u00b7 ' + age((now - Date.parse(r.machine_stop.since)) / 1000));
      }
    }
    (c.readingAges || []).forEach(function (x) {
      var s = (now - x.ts) / 1000;
      setText(x.age, age(s));
      x.li.dataset.stale = String(s > READING_STALE_S);
    });
  }

  // Puts `children` first in `parent`, in this order, moving only nodes out of place (a moved
  // node would restart its animations).
  function placeInOrder(parent, children) {
    var prev = null;
    children.forEach(function (child) {
      var want = prev ? prev.nextElementSibling : parent.firstElementChild;
      if (want !== child) parent.insertBefore(child, want);
      prev = child;
    });
  }

  function render() {
    renderHeader();
    tickClock();
    var seenLines = new Set();
    var seenCards = new Set();
    var order = new Map(); // line key -> cards in order
    snapshot.resources.forEach(function (r) {
      var section = lineSection(r.line_id);
      var key = section.dataset.line;
      seenLines.add(key);
      seenCards.add(r.resource_id);
      var c = cards.get(r.resource_id);
      if (!c) {
        c = makeCard(r.resource_id);
        cards.set(r.resource_id, c);
      }
      updateCard(c, r);
      if (!order.has(key)) order.set(key, []);
      order.get(key).push(c);
    });
    var board = $('board');
    var order2 = [];
    order.forEach(function (list, key) { order2.push([lines.get(key), list]); });
    placeInOrder(board, order2.map(function (x) { return x[0]; }));
    order2.forEach(function (x) { placeInOrder(x[0].grid, x[1]); });
    cards.forEach(function (c, id) {
      if (!seenCards.has(id)) { c.remove(); cards.delete(id); }
    });
    lines.forEach(function (s, key) {
      if (!seenLines.has(key)) { s.remove(); lines.delete(key); }
    });
    $('empty').hidden = snapshot.resources.length > 0;
    setText($('updated'), 'updated ' + timeIn(new Date(snapshot.generated_at),
      snapshot.sites.length === 1 ? snapshot.sites[0].time_zone : undefined, true) +
      (snapshot.truncated ? ' \u00b7 more resources than shown: filter with ?site=' : ''));
  }

  // ---- data -----------------------------------------------------------------------------

  function apply(next) {
    var generated = Date.parse(next.generated_at);
    // Snapshots from several replicas or a reconnect may arrive out of order: keep the newest.
    if (snapshot && generated < Date.parse(snapshot.generated_at)) return;
    if (!snapshot || generated > Date.parse(snapshot.generated_at)) {
      freshAt = Date.now();
      clockOffsetMs = generated - Date.now();
    }
    snapshot = next;
    showNotice(null);
    render();
  }

  function showNotice(text) {
    var n = $('notice');
    n.hidden = !text;
    if (text) n.textContent = text;
  }

  function setConn(state, text) {
    document.body.dataset.conn = state;
    setText($('conn-text'), text);
  }

  // Without a valid board cookie the server answers 401: ask once for a viewer token, which
  // POST /board/session turns into an HttpOnly cookie (the token never goes into a URL).
  var signedOut = false;
  function signIn(message) {
    signedOut = true;
    if (source) { source.close(); source = null; }
    setConn('reconnecting', 'SIGN IN');
    setText($('signin-error'), message || '');
    $('signin').hidden = false;
    $('signin-token').focus();
  }
  $('signin').addEventListener('submit', function (ev) {
    ev.preventDefault();
    fetch('/board/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: $('signin-token').value.trim() })
    }).then(function (res) {
      if (res.status !== 204) { signIn('That token was not accepted.'); return; }
      $('signin').hidden = true;
      $('signin-token').value = '';
      signedOut = false;
      fetchState().then(connect);
    });
  });

  function fetchState() {
    lastPollAt = Date.now();
    return fetch('/board/state' + query, { cache: 'no-store' })
      .then(function (res) {
        if (res.status === 401) { signIn(); return; }
        return res.json().then(function (body) {
          if (!res.ok) throw new Error(body && body.detail ? body.detail : 'HTTP ' + res.status);
          apply(body);
        });
      })
      .catch(function (e) {
        if (!snapshot) showNotice('Cannot load the board: ' + e.message);
      });
  }

  function connect() {
    if (reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; }
    if (signedOut) return;
    if (source) source.close();
    messageAt = Date.now();
    source = new EventSource('/board/events' + query);
    source.addEventListener('open', function () {
      reconnectDelayMs = 1000;
      setConn('live', 'LIVE');
    });
    source.addEventListener('snapshot', function (ev) {
      messageAt = Date.now();
      try {
        apply(JSON.parse(ev.data));
      } catch (e) {
        // keep the last good snapshot
      }
    });
    source.addEventListener('error', function () {
      setConn('reconnecting', 'RECONNECTING');
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (e.g. 503): EventSource gives up, so retry ourselves.
        reconnectTimer = setTimeout(connect, reconnectDelayMs);
        reconnectDelayMs = Math.min(reconnectDelayMs * 2, 30000);
      }
    });
  }

  function everySecond() {
    tickClock();
    cards.forEach(tickCard);
    var now = Date.now();
    var conn = document.body.dataset.conn;
    if (source && source.readyState === EventSource.OPEN) {
      if (now - messageAt > SILENT_RECONNECT_MS) {
        connect();
      } else if (snapshot && now - freshAt > STALE_AFTER_MS) {
        setConn('stale', 'STALE ' + age((now - freshAt) / 1000));
      } else if (conn !== 'live') {
        setConn('live', 'LIVE');
      }
    } else if (!signedOut && now - lastPollAt > POLL_MS) {
      // The stream is down: keep the board moving from the snapshot endpoint meanwhile.
      fetchState();
    }
  }

  fetchState().then(connect);
  setInterval(everySecond, 1000);
})();
