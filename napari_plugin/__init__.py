"""napari_plugin"""
