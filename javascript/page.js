// The page API that A1111 extension scripts rely on (gradioApp, onUiLoaded, onUiUpdate, onAfterUiUpdate,
// onOptionsChanged, onUiTabChange, get_uiCurrentTab, get_uiCurrentTabContent, opts, updateInput).
// Written for Easel; the names and the calling conventions follow A1111 v1.10.1 so extensions keep working.
// Loaded first: the other files of javascript/ and the extensions' scripts use these functions.

/* exported gradioApp, onUiLoaded, onUiUpdate, onAfterUiUpdate, onOptionsChanged, onUiTabChange,
   get_uiCurrentTab, get_uiCurrentTabContent, updateInput, opts, easelSetOptions */

// Live settings values (config.json without secrets), refreshed when settings are applied.
var opts = {};

var uiLoadedCallbacks = [];
var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var optionsChangedCallbacks = [];
var uiTabChangeCallbacks = [];
var easelUiLoaded = false;
var easelAfterUpdateTimer = null;
var easelCurrentTab = null;

function gradioApp() {
    // Gradio 6 renders into the document (no shadow root); the document has getElementById and querySelector.
    const app = document.querySelector("gradio-app");
    return app && app.shadowRoot ? app.shadowRoot : document;
}

function onUiLoaded(callback) {
    uiLoadedCallbacks.push(callback);
}

function onUiUpdate(callback) {
    uiUpdateCallbacks.push(callback);
}

function onAfterUiUpdate(callback) {
    uiAfterUpdateCallbacks.push(callback);
}

function onOptionsChanged(callback) {
    optionsChangedCallbacks.push(callback);
}

function onUiTabChange(callback) {
    uiTabChangeCallbacks.push(callback);
}

function easelRunCallbacks(callbacks, argument) {
    for (const callback of callbacks) {
        try {
            callback(argument);
        } catch (error) {
            console.error("easel: a page callback failed", error);
        }
    }
}

function get_uiCurrentTab() {
    return gradioApp().querySelector("#tabs > .tab-wrapper button.selected, #tabs button[role=tab][aria-selected=true]");
}

function easelIsShown(element) {
    for (let node = element; node && node !== document; node = node.parentNode) {
        if (node.nodeType === 1 && getComputedStyle(node).display === "none") return false;
    }
    return true;
}

function get_uiCurrentTabContent() {
    const panels = gradioApp().querySelectorAll("#tabs > .tabitem[id^=tab_], #tabs > div > .tabitem[id^=tab_]");
    for (const panel of panels) {
        if (easelIsShown(panel)) return panel;
    }
    return null;
}

function updateInput(target) {
    // Gradio listens to "input" to take a value typed into a textbox; scripts that change a box call this.
    target.dispatchEvent(new Event("input", {bubbles: true}));
}

function easelSetOptions(text) {
    // Called from a Gradio event (see modules/ui/page.py) with the settings as JSON text.
    let values = null;
    try {
        values = typeof text === "string" ? JSON.parse(text) : text;
    } catch (error) {
        console.error("easel: settings JSON unreadable", error);
        return;
    }
    if (!values || typeof values !== "object") return;
    for (const key of Object.keys(opts)) delete opts[key];
    Object.assign(opts, values);
    easelRunCallbacks(optionsChangedCallbacks);
}

function easelObserve(mutations) {
    if (!easelUiLoaded && gradioApp().querySelector("#txt2img_prompt")) {
        easelUiLoaded = true;
        easelRunCallbacks(uiLoadedCallbacks);
    }
    easelRunCallbacks(uiUpdateCallbacks, mutations);
    const tab = get_uiCurrentTab();
    if (tab && tab !== easelCurrentTab) {
        easelCurrentTab = tab;
        easelRunCallbacks(uiTabChangeCallbacks);
    }
    clearTimeout(easelAfterUpdateTimer);
    easelAfterUpdateTimer = setTimeout(() => easelRunCallbacks(uiAfterUpdateCallbacks), 200);
}

new MutationObserver(easelObserve).observe(document.documentElement, {childList: true, subtree: true});
