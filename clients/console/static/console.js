// jiwoom console: one picture revealed at a time. Pictures arrive blurred and grey from the server; "Reveal" asks
// for the original (the server logs it), and revealing another, or 30 seconds passing, blurs this one again.
"use strict";

const REBLUR_AFTER_MS = 30000;
let revealed = null;
let timer = null;

function veil(figure) {
  const img = figure.querySelector("img");
  const button = figure.querySelector("button.reveal");
  img.src = img.dataset.obscuredSrc;
  img.classList.add("obscured");
  img.classList.remove("clear");
  figure.classList.remove("revealed");
  button.textContent = button.dataset.revealLabel;
  button.setAttribute("aria-pressed", "false");
  if (revealed === figure) {
    revealed = null;
    clearTimeout(timer);
  }
}

function reveal(figure) {
  if (revealed && revealed !== figure) veil(revealed);
  const img = figure.querySelector("img");
  const button = figure.querySelector("button.reveal");
  img.src = img.dataset.clearSrc;
  img.classList.remove("obscured");
  img.classList.add("clear");
  figure.classList.add("revealed");
  button.textContent = button.dataset.hideLabel;
  button.setAttribute("aria-pressed", "true");
  revealed = figure;
  clearTimeout(timer);
  timer = setTimeout(() => veil(figure), REBLUR_AFTER_MS);
}

function toggle(figure) {
  if (figure.classList.contains("revealed")) veil(figure);
  else reveal(figure);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const figure of document.querySelectorAll("figure.veiled")) {
    figure.querySelector("button.reveal").addEventListener("click", () => toggle(figure));
    figure.querySelector("img").addEventListener("click", () => toggle(figure));
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && revealed) veil(revealed);
  });
  // Leaving the tab blurs what was revealed: nobody walks past an open picture.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && revealed) veil(revealed);
  });
});
