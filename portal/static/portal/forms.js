// Forms: after a failed submit the focus moves to the error summary, so that a screen reader reads
// it first; a textarea with data-counter shows how many characters it holds against its limits.
document.addEventListener("DOMContentLoaded", () => {
  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();
  document.querySelectorAll("[data-counter]").forEach((counter) => {
    const field = document.getElementById(counter.dataset.counter);
    if (!field) return;
    const min = Number(counter.dataset.min || 0);
    const max = Number(counter.dataset.max || 0);
    const update = () => {
      const length = field.value.length;
      let text = `${length.toLocaleString()} characters`;
      if (min && length < min) text += `: ${(min - length).toLocaleString()} more needed`;
      else if (max && length > max) text += `: ${(length - max).toLocaleString()} too many`;
      else if (max) text += ` of at most ${max.toLocaleString()}`;
      counter.textContent = text;
      counter.classList.toggle("counter-bad", (min && length < min) || (max && length > max));
    };
    field.addEventListener("input", update);
    update();
  });
  // A reason template (select[data-fills]) puts its words in the reason box to be edited there, and
  // offers only the templates of the chosen action (data-kind-from names the radio group).
  document.querySelectorAll("select[data-fills]").forEach((select) => {
    const box = document.getElementById(select.dataset.fills);
    const form = select.form;
    select.addEventListener("change", () => {
      const option = select.selectedOptions[0];
      if (box && option && option.dataset.text) box.value = option.dataset.text;
    });
    const group = select.dataset.kindFrom;
    if (!group || !form) return;
    const filter = () => {
      const chosen = form.querySelector(`input[name="${group}"]:checked`);
      select.querySelectorAll("option[data-kind]").forEach((option) => {
        option.hidden = !chosen || option.dataset.kind !== chosen.value;
        if (option.hidden && option.selected) select.value = "";
      });
    };
    form.querySelectorAll(`input[name="${group}"]`).forEach((radio) => radio.addEventListener("change", filter));
    filter();
  });
});
