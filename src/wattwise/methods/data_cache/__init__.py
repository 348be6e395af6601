"""data_cache"""
