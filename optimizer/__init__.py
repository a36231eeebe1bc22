"""Headless tools around ComfyUI: the schedule optimizer, tiny demo models and ComfyUI discovery."""
