"""carbon_aware"""
