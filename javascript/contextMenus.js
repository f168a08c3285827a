// A right-click menu on each Generate button: "Generate forever" (a new job each time the last one ends) and
// "Cancel generate forever", as in A1111. Written for Easel.

/* global gradioApp, onUiUpdate, easelGenerateForever, easelCancelGenerateForever, easelTabOf */

var easelMenu = null;

function easelCloseMenu() {
    if (easelMenu) easelMenu.remove();
    easelMenu = null;
}

function easelMenuEntry(label, id, action) {
    const entry = document.createElement("li");
    entry.textContent = label;
    entry.id = id;
    entry.setAttribute("role", "menuitem");
    entry.addEventListener("click", (event) => {
        event.stopPropagation();
        easelCloseMenu();
        action();
    });
    return entry;
}

function easelOpenGenerateMenu(event, button) {
    event.preventDefault();
    easelCloseMenu();
    const tab = easelTabOf(button);
    easelMenu = document.createElement("ul");
    easelMenu.id = "context-menu";
    easelMenu.className = "context-menu-items";
    easelMenu.setAttribute("role", "menu");
    easelMenu.append(
        easelMenuEntry("Generate forever", tab + "_generate_forever", () => easelGenerateForever(tab)),
        easelMenuEntry("Cancel generate forever", tab + "_cancel_generate_forever", () => easelCancelGenerateForever(tab))
    );
    easelMenu.style.left = event.pageX + "px";
    easelMenu.style.top = event.pageY + "px";
    document.body.append(easelMenu);
}

document.addEventListener("contextmenu", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[id$=_generate]") : null;
    if (button) easelOpenGenerateMenu(event, button);
});
document.addEventListener("click", (event) => {
    // only a person's click elsewhere closes it (generate forever clicks Generate from a script)
    if (event.isTrusted && easelMenu && !easelMenu.contains(event.target)) easelCloseMenu();
});
document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && easelMenu) {
        easelCloseMenu();
        event.preventDefault();
    }
});
