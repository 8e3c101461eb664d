"""The report page's inline style sheet and script (no server, no network: the page works
opened from disk). The script adds two things and the page reads fine without it: a lightbox for
every ``a.zoom`` link (a click shows the full image over the page; Escape or a click closes it)
and the top9 unit browsers' sort / filter / paging controls."""

from __future__ import annotations

CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#d9dee7;--bg:#f6f7f9;--card:#fff;--accent:#2f6fdb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header.top{padding:18px 28px;background:#1d2330;color:#fff}
header.top h1{margin:0;font-size:22px}header.top p{margin:4px 0 0;color:#c3cad6}
.layout{display:flex;align-items:flex-start;gap:24px;padding:20px 28px}
nav.toc{position:sticky;top:12px;flex:0 0 240px;max-height:calc(100vh - 24px);overflow:auto;background:var(--card);
 border:1px solid var(--line);border-radius:8px;padding:12px 14px}
nav.toc h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:0 0 8px}
nav.toc ol{margin:0;padding-left:20px}nav.toc li{margin:3px 0}
nav.toc a{color:var(--accent);text-decoration:none;font-weight:600}nav.toc small{display:block;color:var(--muted);font-weight:400}
nav.toc small.where{overflow-wrap:anywhere}
main{flex:1;min-width:0}
section.result{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin-bottom:24px}
section.result>h2{margin:0 0 4px;font-size:20px}section.result>h2 small{color:var(--muted);font-weight:400;font-size:14px}
.lede{color:var(--muted);margin:0 0 12px}
.meta{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px;margin-bottom:8px}
.meta>div{border:1px solid var(--line);border-radius:6px;padding:8px 10px;background:#fbfcfd;max-width:100%;overflow-x:auto}
.meta h3{margin:0 0 6px;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
h3{font-size:15px;margin:18px 0 8px}h3 small{color:var(--muted);font-weight:400}
table{border-collapse:collapse;margin:4px 0 8px;font-size:13px;display:block;max-width:100%;overflow-x:auto}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f7;font-weight:600}
table.kv>tbody>tr>th{white-space:nowrap}
td table{margin:0}caption{caption-side:top;text-align:left;color:var(--muted);padding:2px 0 6px}
tr.baseline th,tr.baseline td{background:#f8f8f2;font-style:italic}
.num{font-variant-numeric:tabular-nums;white-space:nowrap}
th.idx{color:var(--muted);font-weight:400}
.none{color:#9aa3b2}.stats{color:var(--muted)}.path{border-bottom:1px dotted #9aa3b2}
.more,.note{color:var(--muted);font-style:italic}
ul.chips{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:4px}
ul.chips li{background:#eef2f8;border-radius:10px;padding:0 8px}
ol.ranking{margin:0;padding-left:20px}ol.items{margin:0;padding-left:20px}
details summary{cursor:pointer}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px;align-items:start}
.figures figure{margin:0;min-width:0}.figures figure.wide{grid-column:1/-1}
.figures img{width:100%;height:auto;border:1px solid var(--line);background:#fff;cursor:zoom-in}
figcaption{color:var(--muted);font-size:12px;text-align:center}
.raw{color:var(--muted);font-size:12px}.raw a{color:var(--muted)}
.error{color:#a11;background:#fff0f0;border:1px solid #f1c0c0;border-radius:6px;padding:6px 10px}
.unit-controls{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:center;padding:8px 10px;background:#f1f3f7;
 border-radius:6px;margin-bottom:10px}
.unit-controls input[type=text].bad{outline:2px solid #d33}
.unit-controls .status{min-width:150px;text-align:center;color:var(--muted)}
.unit-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:10px}
.unit{border:1px solid var(--line);border-radius:6px;padding:6px 8px;background:#fff}
.unit.silent{background:#fafafa;color:var(--muted)}
.unit-head{display:flex;justify-content:space-between;gap:8px;font-size:13px}.unit-head span{color:var(--muted)}
.strength{height:4px;background:#eef1f5;border-radius:2px;margin:4px 0 6px}
.strength span{display:block;height:100%;background:var(--accent);border-radius:2px}
.unit-pics{display:flex;gap:6px}.unit-pics figure{margin:0;flex:1}
img.mosaic{width:100%;height:auto;image-rendering:pixelated;border:1px solid var(--line);cursor:zoom-in}
.silent-note{margin:18px 0;text-align:center;font-style:italic}
[hidden]{display:none!important}
#lightbox{position:fixed;inset:0;background:rgba(10,12,18,.88);display:flex;flex-direction:column;align-items:center;
 justify-content:center;z-index:10;cursor:zoom-out;padding:20px}
#lightbox img{max-width:96vw;max-height:88vh;background:#fff;image-rendering:auto}
#lightbox p{color:#eee;margin:8px 0 0}
@media (max-width:900px){.layout{flex-direction:column}nav.toc{position:static;max-height:none;width:100%}}
"""

JS = """
(function(){
  'use strict';
  // lightbox: any a.zoom opens its target over the page
  function openBox(href, caption){
    var box = document.createElement('div');
    box.id = 'lightbox';
    var img = document.createElement('img');
    img.src = href; img.alt = caption;
    var text = document.createElement('p');
    text.textContent = caption + ' (click or Esc to close)';
    box.appendChild(img); box.appendChild(text);
    box.addEventListener('click', closeBox);
    document.body.appendChild(box);
  }
  function closeBox(){ var box = document.getElementById('lightbox'); if (box) box.remove(); }
  document.addEventListener('keydown', function(e){ if (e.key === 'Escape') closeBox(); });
  document.addEventListener('click', function(e){
    var link = e.target.closest ? e.target.closest('a.zoom') : null;
    if (!link || e.ctrlKey || e.metaKey || e.shiftKey) return;
    e.preventDefault();
    openBox(link.getAttribute('href'), link.getAttribute('title') || '');
  });

  // unit browsers: sort, filter and page the cards
  function parseMaps(text){
    text = text.trim();
    if (!text) return null;
    var ranges = [];
    var parts = text.split(/[\\s,]+/);
    for (var i = 0; i < parts.length; i++){
      if (!parts[i]) continue;
      var m = /^(\\d+)(?:-(\\d+))?$/.exec(parts[i]);
      if (!m) return false;
      var lo = parseInt(m[1], 10), hi = m[2] === undefined ? lo : parseInt(m[2], 10);
      ranges.push([Math.min(lo, hi), Math.max(lo, hi)]);
    }
    return ranges;
  }
  function setUp(box){
    var grid = box.querySelector('.unit-grid');
    var cards = Array.prototype.slice.call(grid.querySelectorAll('.unit'));
    var sort = box.querySelector('[data-role=sort]');
    var filter = box.querySelector('[data-role=filter]');
    var hideSilent = box.querySelector('[data-role=hide-silent]');
    var size = box.querySelector('[data-role=page-size]');
    var prev = box.querySelector('[data-role=prev]');
    var next = box.querySelector('[data-role=next]');
    var status = box.querySelector('[data-role=status]');
    var page = 0;
    function key(card, name){ return parseFloat(card.getAttribute('data-' + name)); }
    function update(){
      var ranges = parseMaps(filter.value);
      filter.classList.toggle('bad', ranges === false);
      var chosen = cards.filter(function(card){
        if (hideSilent.checked && card.getAttribute('data-silent') === '1') return false;
        if (!ranges) return true;
        var map = key(card, 'map');
        return ranges.some(function(r){ return map >= r[0] && map <= r[1]; });
      });
      var order = sort.value;
      chosen.sort(function(a, b){
        if (order === 'strength') return key(b, 'strength') - key(a, 'strength') || key(a, 'map') - key(b, 'map');
        if (order === 'weakest') return key(a, 'strength') - key(b, 'strength') || key(a, 'map') - key(b, 'map');
        return key(a, 'map') - key(b, 'map');
      });
      var per = parseInt(size.value, 10) || chosen.length || 1;
      var pages = Math.max(1, Math.ceil(chosen.length / per));
      page = Math.min(Math.max(page, 0), pages - 1);
      var start = page * per, end = Math.min(chosen.length, start + per);
      cards.forEach(function(card){ card.hidden = true; });
      chosen.forEach(function(card, i){ grid.appendChild(card); card.hidden = i < start || i >= end; });
      status.textContent = chosen.length
        ? 'maps ' + (start + 1) + '\\u2013' + end + ' of ' + chosen.length + ' (page ' + (page + 1) + '/' + pages + ')'
        : 'no map matches';
      prev.disabled = page === 0;
      next.disabled = page >= pages - 1;
    }
    [sort, size, hideSilent].forEach(function(el){ el.addEventListener('change', function(){ page = 0; update(); }); });
    filter.addEventListener('input', function(){ page = 0; update(); });
    prev.addEventListener('click', function(){ page -= 1; update(); });
    next.addEventListener('click', function(){ page += 1; update(); });
    update();
  }
  Array.prototype.forEach.call(document.querySelectorAll('.unit-browser'), setUp);
})();
"""
