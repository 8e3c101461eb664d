"""The report page's inline style sheet and script (no server, no network: the page works
opened from disk). The script adds a lightbox for every ``a.zoom`` link (a click shows the full
image over the page; Escape or a click closes it), and the page reads fine without it.

The style sheet is written in two parts with the report views' own rules between them
(:attr:`vizkit.ReportView.css`): :data:`CSS` the page's base, :data:`CSS_LAST` the rules that must
win over any view's (hidden stays hidden, the lightbox covers everything, the narrow layout). The
page never scrolls sideways, down to a 420 px phone: grids shrink their columns to the width there
is (``minmax(min(W, 100%), 1fr)``), wide tables scroll inside their own box, long words break.
Views' scripts (:attr:`vizkit.ReportView.js`) follow :data:`JS`."""

from __future__ import annotations

CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#d9dee7;--bg:#f6f7f9;--card:#fff;--accent:#2f6fdb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header.top{padding:18px 28px;background:#1d2330;color:#fff}
header.top h1{margin:0;font-size:22px}header.top p{margin:4px 0 0;color:#c3cad6;overflow-wrap:anywhere}
.layout{display:flex;align-items:flex-start;gap:24px;padding:20px 28px}
nav.toc{position:sticky;top:12px;flex:0 0 240px;max-height:calc(100vh - 24px);overflow:auto;background:var(--card);
 border:1px solid var(--line);border-radius:8px;padding:12px 14px}
nav.toc h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:0 0 8px}
nav.toc ol{margin:0;padding-left:20px}nav.toc li{margin:3px 0}
nav.toc a{color:var(--accent);text-decoration:none;font-weight:600}nav.toc small{display:block;color:var(--muted);font-weight:400}
nav.toc small.where{overflow-wrap:anywhere}nav.toc .paper{margin-left:6px}
main{flex:1;min-width:0}
section.result{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin-bottom:24px}
section.result>h2{margin:0 0 4px;font-size:20px;overflow-wrap:anywhere}
section.result>h2 small{color:var(--muted);font-weight:400;font-size:14px}
.what{margin:0 0 2px}.lede{color:var(--muted);margin:0 0 12px;overflow-wrap:anywhere}
.paper{display:inline-block;background:#e8effc;color:#234a9a;border-radius:10px;padding:0 8px;font-size:12px;
 font-weight:600;white-space:nowrap;vertical-align:middle}
section.overview{margin-bottom:24px}
section.overview>h2{margin:0;font-size:20px}section.overview>.lede{margin:0 0 10px}
ol.gallery{list-style:none;margin:0;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(min(250px,100%),1fr));
 grid-auto-flow:row dense;gap:12px}
a.card{display:flex;flex-direction:column;height:100%;background:var(--card);border:1px solid var(--line);border-radius:8px;
 color:inherit;text-decoration:none;overflow:hidden}
a.card:hover,a.card:focus{border-color:var(--accent);box-shadow:0 2px 8px rgba(47,111,219,.18)}
a.card .thumb{display:flex;align-items:center;justify-content:center;height:180px;padding:6px;background:#fff;
 border-bottom:1px solid var(--line)}
a.card .thumb img{max-width:100%;max-height:100%;width:auto;height:auto;object-fit:contain}
a.card .thumb.none{color:var(--muted);font-style:italic;background:#fafbfc}
.card-title{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;gap:4px 8px;padding:6px 10px 0}
.card-sub{padding:2px 10px 8px;color:var(--muted);font-size:12px;overflow-wrap:anywhere}
details.fold{margin:12px 0;border-top:1px solid var(--line);padding-top:6px}
details.fold>summary{cursor:pointer}details.fold>summary h3{display:inline;margin:0}
details.fold[open]>summary{margin-bottom:8px}
.meta{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px;margin-bottom:8px}
.meta>div{border:1px solid var(--line);border-radius:6px;padding:8px 10px;background:#fbfcfd;max-width:100%;min-width:0;overflow-x:auto}
.meta h4{margin:0 0 6px;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
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
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(380px,100%),1fr));gap:14px;align-items:start;margin:8px 0}
.figures figure{margin:0;min-width:0}.figures figure.wide{grid-column:1/-1}
.figures img{width:auto;max-width:100%;height:auto;border:1px solid var(--line);background:#fff;cursor:zoom-in}
figcaption{color:var(--muted);font-size:12px;text-align:center;overflow-wrap:anywhere}
.raw{color:var(--muted);font-size:12px}.raw a{color:var(--muted)}
.error{color:#a11;background:#fff0f0;border:1px solid #f1c0c0;border-radius:6px;padding:6px 10px}
"""

CSS_LAST = """[hidden]{display:none!important}
#lightbox{position:fixed;inset:0;background:rgba(10,12,18,.88);display:flex;flex-direction:column;align-items:center;
 justify-content:center;z-index:10;cursor:zoom-out;padding:20px}
#lightbox img{max-width:96vw;max-height:88vh;background:#fff;image-rendering:auto}
#lightbox p{color:#eee;margin:8px 0 0}
@media (min-width:901px){ol.gallery>li.wide{grid-column:span 2}}
@media (max-width:900px){.layout{display:block;padding:14px}nav.toc{display:none}}
@media (max-width:560px){header.top{padding:12px 14px}.layout{padding:8px}section.result{padding:12px 10px}
 ol.gallery{grid-template-columns:repeat(2,minmax(0,1fr));gap:8px}a.card .thumb{height:110px;padding:4px}
 .card-title{padding:4px 6px 0;font-size:13px}.card-sub{padding:2px 6px 6px}.figures{grid-template-columns:1fr}}
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
})();
"""
