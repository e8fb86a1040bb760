"""nowcast"""
