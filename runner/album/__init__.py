"""TODO album"""
