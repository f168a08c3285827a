// Localization in A1111's format: localizations/<name>.json maps English text to its translation; the
// "localization" setting picks the file (after a page reload). Text of labels, buttons, tabs, hints and
// placeholders is translated as it appears; what the user types is never touched. Written for Easel.

/* global onUiUpdate */
/* exported easelSetLocalization */

var localization = {};

var EASEL_UNTRANSLATED = new Set(["TEXTAREA", "SCRIPT", "STYLE", "INPUT", "CODE", "PRE"]);

function easelTranslated(text) {
    const key = text.trim();
    if (!key || !Object.prototype.hasOwnProperty.call(localization, key)) return null;
    return text.replace(key, localization[key]);
}

function easelLocalizeNode(root) {
    if (!root || !Object.keys(localization).length) return;
    if (root.nodeType === Node.TEXT_NODE) {
        const parent = root.parentElement;
        if (parent && !EASEL_UNTRANSLATED.has(parent.tagName)) {
            const translated = easelTranslated(root.textContent);
            if (translated !== null) root.textContent = translated;
        }
        return;
    }
    if (root.nodeType !== Node.ELEMENT_NODE) return;
    for (const attribute of ["placeholder", "title"]) {
        const value = root.getAttribute(attribute);
        const translated = value ? easelTranslated(value) : null;
        if (translated !== null) root.setAttribute(attribute, translated);
    }
    if (EASEL_UNTRANSLATED.has(root.tagName) || root.id === "lightboxModal") return;
    for (const child of Array.from(root.childNodes)) easelLocalizeNode(child);
}

// Called from a Gradio event (modules/ui/page.py) with the chosen file's JSON ("{}" for none).
function easelSetLocalization(text) {
    try {
        localization = JSON.parse(text || "{}") || {};
    } catch (error) {
        console.error("easel: localization unreadable", error);
        localization = {};
    }
    easelLocalizeNode(document.body);
}

onUiUpdate((mutations) => {
    if (!mutations || !Object.keys(localization).length) return;
    for (const mutation of mutations) {
        for (const node of mutation.addedNodes) easelLocalizeNode(node);
    }
});
