(function(){
  'use strict';
  // unit browsers: sort, filter and page the cards
  function parseMaps(text){
    text = text.trim();
    if (!text) return null;
    var ranges = [];
    var parts = text.split(/[\s,]+/);
    for (var i = 0; i < parts.length; i++){
      if (!parts[i]) continue;
      var m = /^(\d+)(?:-(\d+))?$/.exec(parts[i]);
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
        ? 'maps ' + (start + 1) + '\u2013' + end + ' of ' + chosen.length + ' (page ' + (page + 1) + '/' + pages + ')'
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
