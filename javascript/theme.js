// The "theme" setting: Light or Dark, or follow the browser (gradio's own behaviour). An address with
// ?__theme=dark or ?__theme=light (A1111's and gradio's way) wins over the setting. Written for Easel.

/* global opts, onOptionsChanged */

function easelApplyTheme() {
    if (new URL(window.location.href).searchParams.get("__theme")) return;
    if (opts.theme === "Dark") {
        document.body.classList.add("dark");
    } else if (opts.theme === "Light") {
        document.body.classList.remove("dark");
    } else if (window.matchMedia) {
        document.body.classList.toggle("dark", window.matchMedia("(prefers-color-scheme: dark)").matches);
    }
}

onOptionsChanged(easelApplyTheme);
