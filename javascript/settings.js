// The Settings tab: the page list on the left shows one page of settings, or all of them ("Show all pages");
// the search box shows, from every page, the settings whose label matches (as A1111's settings.js).
// Written for Easel.

/* global gradioApp, onUiUpdate */

var easelSettingsQuery = "";
var easelSettingsPage = null;

function easelSettingsPages() {
    return Array.from(gradioApp().querySelectorAll("#tab_settings .easel-settings-page"));
}

// The page's element id for its title, as modules/ui/settings.py page_elem_id() makes it.
function easelPageId(title) {
    return "settings_page_" + title.toLowerCase().replace(/[^a-z0-9]/g, "_");
}

// Hidden pages and rows are written as rules of one <style> element: gradio redraws the elements' class
// attributes, which would drop a class set here.
function easelSettingsStyle() {
    let style = document.getElementById("easel-settings-view");
    if (!style) {
        style = document.createElement("style");
        style.id = "easel-settings-view";
        document.head.append(style);
    }
    return style;
}

function easelUpdateSettingsView() {
    const pages = easelSettingsPages();
    if (!pages.length) return;
    const query = easelSettingsQuery.trim().toLowerCase();
    const showAll = easelSettingsPage === "Show all pages";
    const shownPage = easelSettingsPage ? easelPageId(easelSettingsPage) : pages[0].id;
    const hidden = [];
    for (const page of pages) {
        let shown = 0;
        for (const row of page.querySelectorAll(".easel-setting")) {
            const matches = query === "" || row.textContent.toLowerCase().includes(query) ||
                row.id.toLowerCase().includes(query);
            if (matches) shown++;
            else hidden.push(row.id);
        }
        const visible = query !== "" ? shown > 0 : showAll || page.id === shownPage;
        if (!visible) hidden.push(page.id);
    }
    const rules = hidden.filter((id) => id).map((id) => "#" + CSS.escape(id));
    easelSettingsStyle().textContent = rules.length ? rules.join(",\n") + " { display: none !important; }" : "";
}

function easelFilterSettings(text) {
    easelSettingsQuery = text || "";
    easelUpdateSettingsView();
}

function easelShowSettingsPage(title) {
    easelSettingsPage = title;
    easelUpdateSettingsView();
}

// The Settings tab is drawn when first opened: set its view then.
onUiUpdate(() => {
    const root = gradioApp().getElementById("tab_settings");
    if (!root || root.dataset.easelSettings || !root.querySelector(".easel-settings-page")) return;
    root.dataset.easelSettings = "1";
    easelUpdateSettingsView();
});

document.addEventListener("input", (event) => {
    const box = event.target;
    if (box instanceof Element && box.closest("#settings_search")) easelFilterSettings(box.value);
});
