// Jobs started from this page: which tab runs one, what happens when it ends (generate forever, a browser
// notification), and the keys A1111 binds: Ctrl+Enter generates (interrupting a running job first), Alt+Enter
// skips the current image, Escape interrupts this page's job. Written for Easel.

/* global opts, onUiLoaded, gradioApp, get_uiCurrentTabContent */
/* exported easelJobEnded, easelGenerateForever, easelCancelGenerateForever, easelRequestNotifications */

var easelRunningTabs = new Set();
var easelForeverTabs = new Set();
var easelAfterJob = {};

function easelTabButton(tab, action) {
    return gradioApp().getElementById(tab + "_" + action);
}

function easelTabOf(button) {
    return button.id.replace(/_(generate|interrupt|skip)$/, "");
}

function easelCurrentTabName() {
    const content = get_uiCurrentTabContent();
    const generate = content ? content.querySelector("button[id$=_generate]") : null;
    return generate ? easelTabOf(generate) : null;
}

function easelNotify(tab) {
    if (!opts.browser_notifications || !("Notification" in window)) return;
    if (document.hasFocus() && document.visibilityState === "visible") return;
    if (Notification.permission !== "granted") return;
    const notice = new Notification("Easel", {body: tab + ": the job has ended", tag: "easel-" + tab});
    notice.onclick = () => {
        window.focus();
        notice.close();
    };
}

function easelRequestNotifications() {
    if ("Notification" in window && Notification.permission === "default") Notification.requestPermission();
}

// Called by the generate event's follow-up in modules/ui/common.py once the job has ended (done, failed or
// interrupted).
function easelJobEnded(tab) {
    easelRunningTabs.delete(tab);
    easelNotify(tab);
    const next = easelAfterJob[tab];
    delete easelAfterJob[tab];
    if (next) {
        next();
    } else if (easelForeverTabs.has(tab)) {
        // checked again when the time comes: "Cancel generate forever" may be chosen meanwhile
        setTimeout(() => {
            if (easelForeverTabs.has(tab)) easelStartJob(tab);
        }, 200);
    }
}

function easelStartJob(tab) {
    const generate = easelTabButton(tab, "generate");
    if (generate && !easelRunningTabs.has(tab)) generate.click();
}

function easelGenerateForever(tab) {
    easelForeverTabs.add(tab);
    easelStartJob(tab);
}

function easelCancelGenerateForever(tab) {
    easelForeverTabs.delete(tab);
}

function easelOnKey(event) {
    const enter = event.key === "Enter";
    const tab = enter || event.key === "Escape" ? easelCurrentTabName() : null;
    if (tab === null) return;
    if (enter && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (easelRunningTabs.has(tab)) {
            easelAfterJob[tab] = () => easelStartJob(tab);
            easelTabButton(tab, "interrupt").click();
        } else {
            easelStartJob(tab);
        }
    } else if (enter && event.altKey) {
        event.preventDefault();
        easelTabButton(tab, "skip").click();
    } else if (event.key === "Escape" && !event.defaultPrevented && easelRunningTabs.has(tab)) {
        const viewer = document.getElementById("lightboxModal");
        if (viewer && viewer.style.display !== "none") return;
        event.preventDefault();
        easelTabButton(tab, "interrupt").click();
    }
}

document.addEventListener("keydown", easelOnKey);
document.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[id$=_generate]") : null;
    if (button && button.closest(".tabitem")) easelRunningTabs.add(easelTabOf(button));
}, true);
