// The full-page image viewer: a click on the gallery's large image (after a thumbnail is picked) opens it; Left/Right (or the arrows) move
// through the gallery's images, a click on the image or Z toggles zoom (natural size with scrolling, or fit to
// the window), Escape or the cross closes it. Follows A1111's js_modal_lightbox settings. Written for Easel.

/* global opts, gradioApp */

var easelViewer = null;

function easelViewerButton(label, title, id, action) {
    const button = document.createElement("span");
    button.className = "modalControl";
    button.id = id;
    button.textContent = label;
    button.title = title;
    button.addEventListener("click", (event) => {
        event.stopPropagation();
        action();
    });
    return button;
}

function easelBuildViewer() {
    const modal = document.createElement("div");
    modal.id = "lightboxModal";
    modal.tabIndex = 0;
    modal.style.display = "none";
    const image = document.createElement("img");
    image.id = "modalImage";
    image.addEventListener("click", (event) => {
        event.stopPropagation();
        easelToggleZoom();
    });
    const controls = document.createElement("div");
    controls.className = "modalControls";
    controls.append(
        easelViewerButton("⤡", "Toggle zoom (Z)", "modal_zoom", easelToggleZoom),
        easelViewerButton("×", "Close (Escape)", "modal_close", easelCloseViewer)
    );
    modal.append(
        controls,
        easelViewerButton("❮", "Previous image (Left)", "modal_prev", () => easelStep(-1)),
        image,
        easelViewerButton("❯", "Next image (Right)", "modal_next", () => easelStep(1))
    );
    modal.addEventListener("click", easelCloseViewer);
    modal.addEventListener("keydown", easelViewerKey);
    document.body.append(modal);
    return {modal: modal, image: image, sources: [], index: 0};
}

function easelGalleryImages(gallery) {
    const thumbnails = Array.from(gallery.querySelectorAll(".thumbnail-item img"));
    const sources = thumbnails.map((img) => img.src).filter((src, index, all) => src && all.indexOf(src) === index);
    return sources.length ? sources : Array.from(gallery.querySelectorAll("img")).map((img) => img.src);
}

function easelShowImage(index) {
    const count = easelViewer.sources.length;
    if (!count) return;
    easelViewer.index = (index + count) % count;
    easelViewer.image.src = easelViewer.sources[easelViewer.index];
    easelViewer.modal.dataset.index = String(easelViewer.index);
}

function easelOpenViewer(gallery, source) {
    if (!easelViewer) easelViewer = easelBuildViewer();
    easelViewer.sources = easelGalleryImages(gallery);
    const index = easelViewer.sources.indexOf(source);
    easelViewer.modal.classList.toggle("zoomed", opts.js_modal_lightbox_initially_zoomed !== false);
    easelViewer.modal.style.display = "flex";
    easelShowImage(index === -1 ? 0 : index);
    easelViewer.modal.focus();
}

function easelCloseViewer() {
    if (easelViewer) easelViewer.modal.style.display = "none";
}

function easelToggleZoom() {
    easelViewer.modal.classList.toggle("zoomed");
}

function easelStep(offset) {
    easelShowImage(easelViewer.index + offset);
}

function easelViewerKey(event) {
    const actions = {
        ArrowLeft: () => easelStep(-1),
        ArrowRight: () => easelStep(1),
        Escape: easelCloseViewer,
        z: easelToggleZoom,
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    event.stopPropagation();
    action();
}

document.addEventListener("click", (event) => {
    if (opts.js_modal_lightbox === false || !(event.target instanceof HTMLImageElement)) return;
    const gallery = event.target.closest("[id$=_gallery]");
    // the large image of the gallery's preview, not a thumbnail (a thumbnail click selects the image)
    if (!gallery || !event.target.matches("[data-testid=detailed-image], .preview .media-button img")) return;
    event.preventDefault();
    event.stopPropagation();
    easelOpenViewer(gallery, event.target.src);
}, true);
