// Marks an edited sentence and says whether its source tie will be kept.
document.querySelectorAll(".sentence").forEach(function (box) {
  var area = box.querySelector("textarea");
  var keep = box.querySelector("input[type=checkbox]");
  var live = box.querySelector(".live");
  if (!area || !live) { return; }
  function update() {
    var changed = area.value.trim() !== box.dataset.original;
    box.classList.toggle("changed", changed);
    if (!changed) { live.textContent = ""; return; }
    live.textContent = keep ? (keep.checked ? "edited: source tie kept" : "edited: source tie will be dropped") : "edited";
  }
  area.addEventListener("input", update);
  if (keep) { keep.addEventListener("change", update); }
});
