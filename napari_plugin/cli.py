"""``marsam gui``: open napari with the annotator docked.

napari is imported inside the command, so ``marsam`` works (and lists this command) on
machines without the ``gui`` extra; there the command says how to install it.
"""
from __future__ import annotations

from pathlib import Path

from segmodels.errors import MarsamError
from segmodels.images import IMAGE_SUFFIXES, list_images


def register(sub) -> None:
    from annotate.sam_options import add_sam_options
    p = sub.add_parser("gui", help="label images in napari with SAM or GrabCut box prompts",
                       description="Open napari with marsam's annotator docked. Draw boxes, pick a "
                       "class, and the labels are saved into a session folder after every change.")
    p.add_argument("images", nargs="*", help="a folder of images, or image files")
    p.add_argument("--session", default=None,
                   help="session folder (created if new; default ./marsam-session-<folder name>)")
    p.add_argument("--labels", default=None, help="label spec of a new session (ai4mars, hirise-pits)")
    add_sam_options(p, default="grabcut", extra_types=("grabcut",),
                    type_help="prompt engine loaded at start: a SAM model type (needs its checkpoint) or grabcut")
    p.set_defaults(func=_gui)


def resolve_images(items: list[str]) -> list[Path]:
    """Files as given, folders expanded to their images; a bad path is a user mistake."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise MarsamError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {p}; give a folder of images")
            out += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise MarsamError(f"{p} is not an image ({', '.join(IMAGE_SUFFIXES)})")
            out.append(p)
        else:
            raise MarsamError(f"{p} does not exist; give image files or a folder of images")
    return out


def launch(images: list[Path], session: str | None = None, labels: str | None = None,
           model: str = "grabcut", checkpoint: str | None = None, show: bool = True):
    """Open a viewer with the annotator on ``images``; returns (viewer, widget)."""
    # segment-anything (torchvision, triton) must be imported before napari creates its OpenGL
    # context; see napari_plugin.annotator.project.preload_sam_modules
    import segment_anything  # noqa: F401
    try:
        import napari
    except ImportError:
        raise MarsamError("the GUI needs napari; install it with: pip install 'marsam[gui]'") from None
    from segmodels.labels import get_label_spec

    from .annotator.project import default_session_dir
    from .annotator.widget import AnnotatorWidget
    from .state import EngineConfig, MarsamState

    viewer = napari.Viewer(title="marsam annotator", show=show)
    state = MarsamState.for_viewer(viewer)
    if labels:
        state.set_label_spec(get_label_spec(labels))
    widget = AnnotatorWidget(viewer, state)
    viewer.window.add_dock_widget(widget, name="marsam annotator", area="right")
    widget.model.value = model
    folder = images[0].parent if images else None
    if images:
        if len({p.parent for p in images}) == 1:
            widget.folder.value = folder
        widget.state.set_folder(images)
        widget.open_session(default_session_dir(session, folder), images)
        widget.go_to(0)
    elif session:
        widget.open_session(Path(session))
    widget.load_engine(EngineConfig(model, checkpoint))
    return viewer, widget


def _gui(args) -> int:
    images = resolve_images(args.images)
    launch(images, args.session, args.labels, args.sam_model_type, args.sam_checkpoint)
    import napari
    napari.run()
    return 0
