(function(){
  'use strict';
  // unit atlases: sort every layer's thumbnails by a statistic and filter them by top class
  function number(el, name){
    var text = el.getAttribute('data-' + name);
    return text === null || text === '' ? NaN : parseFloat(text);
  }
  function setUp(box){
    var controls = box.querySelector('.atlas-controls');
    var sort = box.querySelector('[data-role=atlas-sort]');
    var only = box.querySelector('[data-role=atlas-class]');
    var status = box.querySelector('[data-role=atlas-status]');
    var layers = Array.prototype.map.call(box.querySelectorAll('.atlas-layer'), function(layer){
      var grid = layer.querySelector('.atlas-grid');
      return {grid: grid, shown: layer.querySelector('[data-role=atlas-shown]'),
              units: Array.prototype.slice.call(grid.querySelectorAll('.atlas-unit'))};
    });
    function update(){
      var key = sort ? sort.value : 'unit';
      var chosen = only ? only.value : '';
      var shown = 0, total = 0;
      layers.forEach(function(layer){
        var order = layer.units.slice();
        if (key !== 'unit'){
          order.sort(function(a, b){
            var x = number(a, key), y = number(b, key);
            if (isNaN(x) !== isNaN(y)) return isNaN(x) ? 1 : -1;  // units without the value go last
            return (isNaN(x) ? 0 : y - x) || number(a, 'unit') - number(b, 'unit');
          });
        }
        var here = 0;
        order.forEach(function(unit){
          var hide = chosen !== '' && unit.getAttribute('data-class') !== chosen;
          unit.hidden = hide;
          if (!hide) here += 1;
          layer.grid.appendChild(unit);
        });
        if (layer.shown) layer.shown.textContent = chosen !== '' ? '· ' + here + ' shown' : '';
        shown += here;
        total += layer.units.length;
      });
      if (status) status.textContent = chosen !== '' ? shown + ' of ' + total + ' units have this top class' : total + ' units';
    }
    if (sort) sort.addEventListener('change', update);
    if (only) only.addEventListener('change', update);
    if (controls) controls.hidden = false;
    update();
  }
  Array.prototype.forEach.call(document.querySelectorAll('.atlas[data-atlas]'), setUp);
})();
